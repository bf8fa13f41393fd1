from catalog.engine import crypto, manifest


def test_a_signed_manifest_verifies_and_any_change_breaks_it():
    key = crypto.derive_manifest_key(crypto.generate_master_key())
    signed = manifest.sign_manifest(manifest.build_manifest(sha256="ab" * 32, stored_bytes=10), key)
    assert manifest.verify_manifest(manifest.loads(manifest.dumps(signed)), key)

    changed = dict(signed, stored_bytes=11)
    assert not manifest.verify_manifest(changed, key)
    assert not manifest.verify_manifest(signed, crypto.derive_manifest_key(crypto.generate_master_key()))
    assert not manifest.verify_manifest({k: v for k, v in signed.items() if k != "hmac"}, key)
