"""Master keys wrapped by AWS KMS, against moto's KMS in server mode (the
session's moto server, which serves KMS beside S3), reached as a deployment
reaches KMS: credentials, region and AWS_ENDPOINT_URL_KMS in the
environment. KMS alone or under the KEK as well; the key id and fingerprint
bind the KMS ciphertext; a key opened once is not unwrapped again per use;
KMS unreachable or refusing is said in words; seal_keys moves keys to KMS and
from one KMS key to another. Real SQLite backups decrypted on another host."""

import base64
import os
import sqlite3
import uuid
from io import StringIO
from types import SimpleNamespace

import boto3
import botocore.exceptions
import pytest
from django.core.management import call_command
from django.urls import reverse

from catalog import backup_runs, keyring, keys, verification
from catalog.engine import crypto, keyseal
from catalog.errors import Refused
from catalog.models import AuditEvent, Backup, Key, KeyRotation, Verification
from tests.catalog.keys.conftest import on_host
from tests.factories import local_destination, make_plan, sqlite_source
from tests.harness import s3

pytestmark = pytest.mark.django_db(transaction=True)

NOWHERE = "http://127.0.0.1:9"  # the discard port: nothing listens there


def new_kms_key(client):
    metadata = client.create_key(Description="Strongroom master keys")["KeyMetadata"]
    alias = f"alias/strongroom-{uuid.uuid4().hex[:8]}"
    client.create_alias(AliasName=alias, TargetKeyId=metadata["KeyId"])
    return SimpleNamespace(alias=alias, arn=metadata["Arn"], key_id=metadata["KeyId"])


@pytest.fixture
def kms(s3_server, monkeypatch, settings):
    """A KMS key on moto's server, named by its alias in STRONGROOM_KMS_KEY_ID."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.CREDENTIALS["access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.CREDENTIALS["secret_access_key"])
    monkeypatch.setenv("AWS_DEFAULT_REGION", s3.CREDENTIALS["region"])
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    client = boto3.client(
        "kms",
        endpoint_url=s3_server,
        region_name=s3.CREDENTIALS["region"],
        aws_access_key_id=s3.CREDENTIALS["access_key_id"],
        aws_secret_access_key=s3.CREDENTIALS["secret_access_key"],
    )
    key = new_kms_key(client)
    settings.KMS_KEY_ID = key.alias
    yield SimpleNamespace(client=client, endpoint=s3_server, **vars(key))
    keyring.forget_opened_keys()


@pytest.fixture
def encrypted_sqlite_plan(tmp_path):
    source = sqlite_source(tmp_path)
    return make_plan(source, [local_destination(tmp_path / "disk")], format="sqlite", encrypt=True)


def backup_of(plan):
    backup = backup_runs.start_backup("test", plan)
    backup.refresh_from_db()
    assert backup.status == Backup.SUCCEEDED, backup.error
    return backup


def downloaded_rows(admin_client, backup, path):
    response = admin_client.post(reverse("backup_download", args=[backup.pk]))
    assert response.status_code == 200, response.content[:500]
    path.write_bytes(b"".join(response.streaming_content))
    with sqlite3.connect(path) as conn:
        return [name for (name,) in conn.execute("SELECT name FROM items ORDER BY id")]


@pytest.mark.parametrize("with_kek", [False, True], ids=["kms alone", "kms under the kek"])
def test_a_key_wrapped_by_kms_opens_on_another_host(
    with_kek, kms, encrypted_sqlite_plan, admin_client, settings, tmp_path
):
    settings.KEY_ENCRYPTION_KEY = os.urandom(32) if with_kek else None
    backup = backup_of(encrypted_sqlite_plan)
    key = Key.objects.get(is_active=True)
    scheme, kek_fp, payload = keyseal.parse(key.sealed_key)
    assert scheme == ("kms+kek-v1" if with_kek else "kms-v1")
    assert kek_fp == (keyseal.kek_fingerprint(settings.KEY_ENCRYPTION_KEY) if with_kek else "")
    assert files_in(settings.KEY_DIR) == []
    page = " ".join(admin_client.get(reverse("key_list")).content.decode().split())
    assert f"wrapped by AWS KMS key {kms.alias}" in page

    on_host(settings, tmp_path / "host-b-keys")
    assert downloaded_rows(admin_client, backup, tmp_path / "plain.sqlite3") == ["bolt", "nut"]
    master = keyring.master_key(key.key_id)
    assert key.fingerprint == crypto.key_fingerprint(master)

    if not with_kek:
        # The KMS ciphertext opens only with the key id and fingerprint it was made for.
        with pytest.raises(botocore.exceptions.ClientError, match="InvalidCiphertextException"):
            kms.client.decrypt(CiphertextBlob=payload)
        context = {"strongroom-master-key": key.key_id, "fingerprint": key.fingerprint}
        answer = kms.client.decrypt(CiphertextBlob=payload, EncryptionContext=context)
        assert answer["Plaintext"] == master and answer["KeyId"] == kms.arn
    else:
        # The KEK alone opens nothing: the key inside is still wrapped by KMS.
        settings.KMS_KEY_ID = ""
        keyring.forget_opened_keys()
        with pytest.raises(keyring.KeyUnavailable) as refused:
            keyring.master_key(key.key_id)
        assert str(refused.value) == (
            f"Master key {key.key_id} cannot be unwrapped: it is wrapped by AWS KMS, and this host has no KMS key set"
        )


def files_in(key_dir):
    return sorted(path.name for path in key_dir.iterdir()) if key_dir.exists() else []


def test_a_key_is_unwrapped_once_per_process_and_kms_failures_are_said_in_words(
    kms, encrypted_sqlite_plan, settings, monkeypatch, tmp_path
):
    backup = backup_of(encrypted_sqlite_plan)
    key_id, key = keyring.active_key()

    # Opened once: KMS going away does not stop this process from using the key.
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", NOWHERE)
    assert keyring.master_key(key_id) == key
    check = verification.run_here(verification.create_verification("test", backup, "checksum", enqueue_it=False))
    assert check.status == Verification.PASSED, check.summary

    # A new process (host) cannot unwrap it while KMS is unreachable, and says so.
    on_host(settings, tmp_path / "host-b-keys")
    with pytest.raises(keyring.KeyUnavailable) as refused:
        keyring.master_key(key_id)
    assert str(refused.value) == f"Master key {key_id} cannot be unwrapped: AWS KMS at {NOWHERE} cannot be reached"
    check = verification.run_here(verification.create_verification("test", backup, "checksum", enqueue_it=False))
    assert check.status == Verification.FAILED
    assert f"AWS KMS at {NOWHERE} cannot be reached" in check.summary

    # A region where the KMS key does not exist: KMS refuses, and its reason is passed on.
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", kms.endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    settings.KMS_KEY_ID = kms.key_id
    with pytest.raises(keyring.KeyUnavailable) as refused:
        keyring.master_key(key_id)
    assert str(refused.value).startswith(
        f"Master key {key_id} cannot be unwrapped: AWS KMS at {kms.endpoint} refused (AccessDeniedException"
    )
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    assert keyring.master_key(key_id) == key


def test_a_rotation_whose_new_key_kms_cannot_seal_makes_no_key(kms, admin_user, monkeypatch):
    keyring.active_key()
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", NOWHERE)

    with pytest.raises(Refused) as refused:
        keys.start_rotation(admin_user)

    assert str(refused.value).endswith(
        f"could not be sealed: AWS KMS at {NOWHERE} cannot be reached. No new key was made."
    )
    assert Key.objects.count() == 1 and not KeyRotation.objects.exists()
    assert not AuditEvent.objects.filter(action__in=["key.generate", "key.rotate"]).exists()


def test_seal_keys_wraps_keys_with_kms_and_moves_them_to_another_kms_key(
    kms, encrypted_sqlite_plan, admin_client, settings, tmp_path
):
    kek = os.urandom(32)
    settings.KEY_ENCRYPTION_KEY, settings.KMS_KEY_ID = kek, ""
    backup = backup_of(encrypted_sqlite_plan)
    key = Key.objects.get()
    assert keyseal.scheme_of(key.sealed_key) == "kek-v1"

    settings.KMS_KEY_ID = kms.alias
    out = StringIO()
    call_command("seal_keys", stdout=out)
    assert f"{key.key_id}: sealed again, sealed under the key-encryption key" in out.getvalue()
    key.refresh_from_db()
    assert keyseal.scheme_of(key.sealed_key) == "kms+kek-v1"
    assert AuditEvent.objects.get(action="key.seal").changes["now"] == {
        "scheme": "kms+kek-v1",
        "kek": keyseal.kek_fingerprint(kek),
        "kms_key": kms.arn,
    }
    call_command("seal_keys", stdout=(out := StringIO()))
    assert "already sealed 1" in out.getvalue()

    # Another KMS key: the rows still open with the old one (its ARN is in the ciphertext) and move over.
    other = new_kms_key(kms.client)
    settings.KMS_KEY_ID = other.alias
    call_command("seal_keys", stdout=(out := StringIO()))
    assert "Sealed 1" in out.getvalue()
    key.refresh_from_db()
    opened = keyring.open_sealed_copy(key.key_id, key.fingerprint, key.sealed_key)
    assert opened.kms_key_arn == other.arn and opened.kek_fingerprint == keyseal.kek_fingerprint(kek)

    on_host(settings, tmp_path / "host-b-keys")
    assert downloaded_rows(admin_client, backup, tmp_path / "plain.sqlite3") == ["bolt", "nut"]
    assert base64.b64encode(opened.key).decode() not in out.getvalue()
