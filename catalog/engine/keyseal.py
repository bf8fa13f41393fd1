"""Master keys sealed for the metadata database, so that every host sharing
it can use them: under a key-encryption key (the KEK, 32 bytes every host is
given from the environment or a secret file), and optionally wrapped by AWS
KMS as well. Plain Python: the catalog keeps the sealed text in the key's row
(catalog/keyring.py).

A sealed value says how it was sealed, so that the value alone says what
opens it:

    kek-v1:<KEK fingerprint>:<base64 of nonce ‖ AES-256-GCM(KEK, key)>
    kms-v1:<base64 of the KMS ciphertext of the key>
    kms+kek-v1:<KEK fingerprint>:<base64 of nonce ‖ AES-256-GCM(KEK, KMS ciphertext of the key)>

With both, KMS wraps the key first and the KEK seals what KMS returned: the
KEK is checked here, without a call, so a host given the wrong KEK is told
so before KMS is asked; changing the KEK re-seals without calling KMS; and
neither the database with the KEK, nor the database with the right to call
KMS, opens a key. The scheme, the key's id and its fingerprint are the
associated data of the KEK's AES-GCM and the KMS encryption context, so a
sealed value copied onto another key's row does not open as that key, and an
opened key must have the fingerprint its row records.
"""

import base64
import binascii
import hashlib
import os
import re
from dataclasses import dataclass
from typing import Any, NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from catalog.engine import crypto

KEK_BYTES = 32
KEK_ONLY, KMS_ONLY, KMS_AND_KEK = "kek-v1", "kms-v1", "kms+kek-v1"
NONCE_BYTES = 12
HOW_TO_MAKE_ONE = "make one with `openssl rand -base64 32`"


class SealError(Exception):
    """A master key could not be sealed or opened. str() says why in words
    (without the key, the KEK or the sealed value); the caller names the key."""


class WrongKek(SealError):
    """Sealed under a KEK this host was not given."""


class KmsFailed(SealError):
    """AWS KMS could not be reached, or refused."""


class Damaged(SealError):
    """Not a sealed value, or one that does not open as this key."""


def parse_kek(text: str, name: str) -> bytes:
    """The 32 bytes of a KEK written in base64, or ValueError naming the
    setting `name` (never the value)."""
    try:
        kek = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"{name} is not base64: it must be 32 random bytes in base64 ({HOW_TO_MAKE_ONE})") from exc
    if len(kek) != KEK_BYTES:
        raise ValueError(
            f"{name} must be 32 bytes (256 bits) in base64, and it holds {len(kek)} bytes ({HOW_TO_MAKE_ONE})"
        )
    return kek


def kek_fingerprint(kek: bytes) -> str:
    """Tells KEKs apart without revealing them (safe to show and log)."""
    return hashlib.sha256(b"strongroom kek fingerprint" + kek).hexdigest()[:16]


def region_of(kms_key_id: str) -> str | None:
    """The region in a key or alias ARN (arn:aws:kms:<region>:<account>:key/…)."""
    match = re.match(r"^arn:[^:]+:kms:([^:]+):", kms_key_id)
    return match[1] if match else None


class Kms:
    """One AWS KMS key, reached through the usual AWS environment: the
    credentials chain, AWS_DEFAULT_REGION (or the region of a key ARN), and
    AWS_ENDPOINT_URL_KMS or AWS_ENDPOINT_URL for another endpoint (a VPC
    endpoint; moto's server in the tests)."""

    def __init__(self, key_id: str) -> None:
        self.key_id = key_id
        self.region = region_of(key_id) or os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION")

    def client(self) -> Any:
        # Imported here: the settings read a KEK through this module at every
        # start, and most hosts never call KMS. A session of its own: boto3's
        # default one is not thread-safe, and a key is opened once per process.
        import boto3
        import botocore.exceptions
        from botocore.config import Config

        try:
            return boto3.session.Session().client(
                "kms",
                region_name=self.region,
                config=Config(
                    connect_timeout=5, read_timeout=15, retries={"total_max_attempts": 3, "mode": "standard"}
                ),
            )
        except botocore.exceptions.NoRegionError as exc:
            raise KmsFailed(
                f"AWS KMS key {self.key_id} has no region: set AWS_DEFAULT_REGION, or give the key's ARN"
            ) from exc

    def call(self, method: str, **kwargs: Any) -> dict[str, Any]:
        import botocore.exceptions

        client = self.client()
        where = f"AWS KMS at {client.meta.endpoint_url}"
        try:
            answer: dict[str, Any] = getattr(client, method)(**kwargs)
        except (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectTimeoutError) as exc:
            raise KmsFailed(f"{where} cannot be reached") from exc
        except botocore.exceptions.ReadTimeoutError as exc:
            raise KmsFailed(f"{where} stopped answering") from exc
        except botocore.exceptions.NoCredentialsError as exc:
            raise KmsFailed(f"no AWS credentials are set for {where}") from exc
        except botocore.exceptions.ClientError as exc:
            error = exc.response.get("Error", {})
            said = ": ".join(part for part in (error.get("Code", ""), error.get("Message", "")) if part)
            raise KmsFailed(f"{where} refused ({said or 'no reason given'})") from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise KmsFailed(f"{where} failed ({type(exc).__name__})") from exc
        return answer

    def encrypt(self, plaintext: bytes, context: dict[str, str]) -> bytes:
        answer = self.call("encrypt", KeyId=self.key_id, Plaintext=plaintext, EncryptionContext=context)
        return bytes(answer["CiphertextBlob"])

    def decrypt(self, blob: bytes, context: dict[str, str]) -> tuple[bytes, str]:
        """(plaintext, ARN of the KMS key that opened it). No KeyId is given:
        the blob names its key, so rows wrapped by a previous KMS key still
        open while they are moved to the new one."""
        answer = self.call("decrypt", CiphertextBlob=blob, EncryptionContext=context)
        return bytes(answer["Plaintext"]), str(answer.get("KeyId", ""))

    def arn(self) -> str:
        """The ARN of the configured key (an alias or id resolved)."""
        return str(self.call("describe_key", KeyId=self.key_id)["KeyMetadata"]["Arn"])


class Opened(NamedTuple):
    key: bytes
    kek_fingerprint: str  # of the KEK that opened it; "" without a KEK layer
    kms_key_arn: str  # of the KMS key that unwrapped it; "" without a KMS layer


def associated_data(scheme: str, key_id: str, fingerprint: str) -> bytes:
    return f"strongroom sealed master key|{scheme}|{key_id}|{fingerprint}".encode()


def kms_context(key_id: str, fingerprint: str) -> dict[str, str]:
    # Logged by CloudTrail beside each call: names the key, never reveals it.
    return {"strongroom-master-key": key_id, "fingerprint": fingerprint}


def parse(sealed: str) -> tuple[str, str, bytes]:
    """(scheme, KEK fingerprint or "", payload) of a sealed value."""
    scheme, _, rest = sealed.partition(":")
    kek_fp, payload = "", rest
    if scheme != KMS_ONLY:
        kek_fp, _, payload = rest.partition(":")
    if scheme not in (KEK_ONLY, KMS_ONLY, KMS_AND_KEK) or (scheme != KMS_ONLY and not kek_fp):
        raise Damaged("its sealed copy is not in a form this version of Strongroom knows")
    try:
        return scheme, kek_fp, base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise Damaged("its sealed copy is damaged (not base64)") from exc


def scheme_of(sealed: str) -> str:
    return sealed.partition(":")[0]


@dataclass(frozen=True)
class Sealer:
    """How this host seals master keys (a KEK, KMS, or both), and the
    previous KEKs it still opens them with while they are re-sealed."""

    kek: bytes | None = None
    previous_keks: tuple[bytes, ...] = ()
    kms: Kms | None = None

    def __post_init__(self) -> None:
        if self.kek is None and self.kms is None:
            raise ValueError("A sealer needs a KEK, a KMS key, or both")

    @property
    def scheme(self) -> str:
        if self.kms is None:
            return KEK_ONLY
        return KMS_ONLY if self.kek is None else KMS_AND_KEK

    def identity(self) -> tuple[str, tuple[str, ...], str]:
        """What decides whether a value opens (for a cache of opened keys)."""
        return (
            kek_fingerprint(self.kek) if self.kek else "",
            tuple(kek_fingerprint(kek) for kek in self.previous_keks),
            self.kms.key_id if self.kms else "",
        )

    def seal(self, key_id: str, fingerprint: str, key: bytes) -> str:
        inner = self.kms.encrypt(key, kms_context(key_id, fingerprint)) if self.kms else key
        if self.kek is None:
            return f"{KMS_ONLY}:{base64.b64encode(inner).decode()}"
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(self.kek).encrypt(nonce, inner, associated_data(self.scheme, key_id, fingerprint))
        return f"{self.scheme}:{kek_fingerprint(self.kek)}:{base64.b64encode(nonce + sealed).decode()}"

    def kek_for(self, kek_fp: str) -> bytes:
        for kek in (self.kek, *self.previous_keks):
            if kek is not None and kek_fingerprint(kek) == kek_fp:
                return kek
        have = kek_fingerprint(self.kek) if self.kek else "none"
        raise WrongKek(f"it was sealed under the KEK with fingerprint {kek_fp}, and this host's is {have}")

    def open(self, key_id: str, fingerprint: str, sealed: str) -> Opened:
        scheme, kek_fp, inner = parse(sealed)
        if kek_fp:
            try:
                inner = AESGCM(self.kek_for(kek_fp)).decrypt(
                    inner[:NONCE_BYTES], inner[NONCE_BYTES:], associated_data(scheme, key_id, fingerprint)
                )
            except (InvalidTag, ValueError) as exc:
                raise Damaged("its sealed copy is damaged, or belongs to another key") from exc
        kms_arn = ""
        if scheme in (KMS_ONLY, KMS_AND_KEK):
            if self.kms is None:
                raise KmsFailed("it is wrapped by AWS KMS, and this host has no KMS key set")
            inner, kms_arn = self.kms.decrypt(inner, kms_context(key_id, fingerprint))
        if len(inner) != 32 or crypto.key_fingerprint(inner) != fingerprint:
            raise Damaged(f"its sealed copy does not open to the key with fingerprint {fingerprint}")
        return Opened(inner, kek_fp, kms_arn)

    def is_current(self, sealed: str) -> bool:
        """Sealed as this sealer seals now (a change of KMS key aside, which
        only opening tells: Opened.kms_key_arn)."""
        if scheme_of(sealed) != self.scheme:
            return False
        return self.kek is None or sealed.split(":", 2)[1] == kek_fingerprint(self.kek)

    def describe(self) -> str:
        parts = []
        if self.kek is not None:
            parts.append(f"sealed under the key-encryption key {kek_fingerprint(self.kek)}")
        if self.kms is not None:
            parts.append(f"wrapped by AWS KMS key {self.kms.key_id}")
        return ", ".join(parts)
