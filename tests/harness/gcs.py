"""The Google Cloud Storage emulator from PyPI (gcp-storage-emulator, pinned in
requirements-test.txt), serving GCS's JSON API on a free loopback port in a
process of its own, started once per session with its data in a temporary
directory. Strongroom reaches it as a destination whose endpoint URL is the
emulator, with the google-cloud-storage client exactly as it reaches Google.

Its own process: it is a single-threaded HTTP server that holds whole objects
in memory while it serves them, and a test that measures the memory a write
takes must not count the server's.

What the emulator does as the real service does, checked for what Strongroom
needs: resumable uploads fed chunk by chunk (`Content-Range: bytes a-b/*`,
answered 308 with the persisted range, the last chunk with its total),
status queries of a session (`bytes */*`), empty objects (`bytes */0`),
ranged reads (`Range: bytes=N-`, answered 206), generations, listing with a
prefix, deletes (soft-deleted for 7 days, as new buckets are by default), and
404 for a missing bucket or object.

Where it differs from the real service, and what this harness does about it
(every workaround is here; the backend has no path for the emulator alone):

1. Cancelling a resumable session (DELETE on its URI) is not implemented: the
   emulator answers 501 and keeps the session and its bytes. Here it cancels
   the session, drops its bytes and answers 499, as GCS does.
2. A status query of a session that has received nothing answers
   `Range: bytes=0-0` (one byte held); GCS sends no Range then. Here: none.
3. A status query of a finished session answers 404 (the emulator forgets
   the session when the object is made); GCS answers 200 with the object.
   Here: 200 with the object, so a final chunk whose answer was lost is
   recognised as GCS would.
4. Preconditions are ignored: `ifGenerationMatch` on reading an object (its
   metadata or its bytes) is served whatever the generation. Here a
   generation that no longer matches is answered 412, as GCS does.
5. Nobody signs in: every request is served whatever its Authorization. Here
   the emulator also serves Google's OAuth token endpoint (/token, the
   `token_uri` of the keys below): it checks the RS256 signature of a
   service account's JWT assertion against the accounts this harness made
   (invalid_grant "Invalid JWT Signature." otherwise, as Google answers) and
   hands out bearer tokens. A request with an unknown token is answered 401,
   a write by the read-only account 403, both with GCS's wording; requests
   with no Authorization are served (the anonymous credentials a destination
   uses for an emulator).
6. Its error answers have no body, so a missing bucket and a missing object
   are both a bare 404 (GCS says "The specified bucket does not exist." or
   "No such object"). Nothing changed here: the backend tells them apart by
   listing the bucket, which works the same on both.
7. It rewrites a session's whole file for every chunk it appends (quadratic
   in the object's size): the tests use chunks of 256 KiB to 2 MiB and keep
   objects to tens of MiB.
8. Listing is not paginated (maxResults and pageToken are ignored); the
   client pages the same way over one page.
9. It keeps each object as a file named after it, so an object whose name
   ends in "/" (a folder made in the console) and objects under that name
   cannot both exist: the second write fails and the connection is dropped.
   The tests keep such a folder apart from other objects.
"""

import base64
import contextlib
import hashlib
import importlib.util
import json
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from catalog.engine.wal import stop_process
from tests.harness.pg import free_port

REPO = Path(__file__).resolve().parents[2]
PROJECT = "strongroom-test"
# The accounts the emulator's token endpoint knows, by role: the writer has
# Storage Object Admin on every bucket, the reader Storage Object Viewer.
WRITER, READER = "writer", "reader"
ROLES = {WRITER: "roles/storage.objectAdmin", READER: "roles/storage.objectViewer"}


def missing_reason():
    """Why the emulator cannot start here, or None."""
    if importlib.util.find_spec("gcp_storage_emulator") is None:
        return "gcp-storage-emulator is not installed: pip install -r requirements-test.txt"
    return None


def private_key_pem():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return pem, public


def service_account_key(name, token_uri):
    """(a service account key file's JSON as Google issues it, its public key)."""
    pem, public = private_key_pem()
    key = {
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": secrets.token_hex(20),
        "private_key": pem,
        "client_email": f"{name}@{PROJECT}.iam.gserviceaccount.com",
        "client_id": str(secrets.randbelow(10**20)),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "universe_domain": "googleapis.com",
    }
    return json.dumps(key), public


@dataclass
class GcsServer:
    endpoint_url: str
    data_dir: Path
    process: subprocess.Popen
    keys: dict = field(default_factory=dict)  # role -> service account key JSON

    def client(self):
        """A client of the emulator with anonymous credentials, as the tests look at it."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project=None, credentials=AnonymousCredentials(), client_options={"api_endpoint": self.endpoint_url}
        )

    def all_keys(self, bucket):
        return sorted(blob.name for blob in self.client().list_blobs(bucket))

    def open_sessions(self, bucket):
        """{object name: the file of the bytes it holds} of the resumable
        sessions in `bucket` the emulator holds, neither finished by their
        last chunk nor cancelled."""
        store = self.data_dir / ".cloudstorage"
        meta = json.loads((store / ".meta").read_text()) if (store / ".meta").exists() else {}
        return {
            obj["name"]: store / "_resumable" / hashlib.sha256(upload_id.encode()).hexdigest()
            for upload_id, obj in meta.get("resumable", {}).items()
            if obj.get("bucket") == bucket
        }

    def forged_key(self, role=WRITER):
        """The account's key file with another private key: what Google answers
        with invalid_grant ("Invalid JWT Signature.")."""
        key = json.loads(self.keys[role])
        key["private_key"] = private_key_pem()[0]
        return json.dumps(key)


def answers(port):
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


def start_server(data_dir):
    """The emulator (with the fixes above) on a free port, its data in `data_dir`."""
    data_dir = Path(data_dir)
    port = free_port()
    endpoint_url = f"http://127.0.0.1:{port}"
    keys, accounts = {}, {}
    for role in ROLES:
        keys[role], public = service_account_key(f"strongroom-{role}", f"{endpoint_url}/token")
        accounts[json.loads(keys[role])["client_email"]] = {"public_key": public, "role": ROLES[role]}
    (data_dir / "accounts.json").write_text(json.dumps(accounts))
    log = data_dir / "emulator.log"
    # Its output goes to a file, not to a pipe nobody reads, which could fill and stall it.
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.harness.gcs", str(port), str(data_dir)],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=output,
        )
    deadline = time.monotonic() + 30
    while not answers(port):
        if time.monotonic() > deadline or process.poll() is not None:
            stop_process(process)
            raise RuntimeError(f"The GCS emulator did not start: {log.read_text(errors='replace')[-500:]}")
        time.sleep(0.05)
    return GcsServer(endpoint_url, data_dir, process, keys)


@pytest.fixture(scope="session")
def gcs_server():
    """The session's emulator: its URL, data directory and service account keys."""
    if reason := missing_reason():
        pytest.skip(reason)
    data_dir = Path(tempfile.mkdtemp(prefix="strongroom-gcs-"))
    server = start_server(data_dir)
    yield server
    stop_process(server.process)
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def gcs_bucket(gcs_server):
    """A fresh, empty bucket; the writer account's key may do anything in it."""
    name = f"sr-test-{uuid.uuid4().hex[:10]}"
    gcs_server.client().create_bucket(name)
    return {
        "endpoint_url": gcs_server.endpoint_url,
        "bucket": name,
        "service_account_json": gcs_server.keys[WRITER],
        "server": gcs_server,
    }


# What follows runs in the emulator's own process (python -m tests.harness.gcs PORT DATA_DIR).


class Status:
    """An HTTP status the emulator's Response can send (value and phrase)."""

    def __init__(self, value, phrase):
        self.value, self.phrase = value, phrase


CLIENT_CLOSED = Status(499, "Client Closed Request")  # GCS's answer to cancelling a session
WRITES = ("POST", "PUT", "PATCH", "DELETE")


def gcs_error(response, status, message, reason):
    from http import HTTPStatus

    response.status = HTTPStatus(status)
    response.json({"error": {"code": status, "message": message, "errors": [{"message": message, "reason": reason}]}})


GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"  # what google-auth puts in "aud", whatever token_uri is


def verify_assertion(assertion, accounts):
    """The account a JWT bearer assertion signs in as, or None when Google would refuse it."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    def decode(part):
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))

    try:
        header, payload, signature = assertion.split(".")
        claims = json.loads(decode(payload))
        account = accounts[claims["iss"]]
        public = serialization.load_pem_public_key(account["public_key"].encode())
        public.verify(decode(signature), f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
    except (ValueError, KeyError, InvalidSignature):
        return None
    if claims.get("aud") != GOOGLE_TOKEN_AUDIENCE or claims.get("exp", 0) < time.time():
        return None
    return claims["iss"]


def patch_emulator(data_dir):
    """The fixes listed in this module's docstring, made to the emulator's handlers."""
    from http import HTTPStatus
    from urllib.parse import parse_qs

    from gcp_storage_emulator import server, settings
    from gcp_storage_emulator.exceptions import NotFound
    from gcp_storage_emulator.handlers import objects
    from gcp_storage_emulator.storage import RESUMABLE_DIR

    accounts = json.loads((Path(data_dir) / "accounts.json").read_text())
    tokens = {}  # bearer token -> account email
    finished = {}  # upload id -> the object its session made

    def cancel_session(request, response, storage):  # 1
        upload_id = request.query["upload_id"][0]
        try:
            storage.delete_resumable_file_obj(upload_id)
        except NotFound:
            return gcs_error(response, 404, "No such upload session", "notFound")
        storage._delete_file(RESUMABLE_DIR, storage.safe_id(upload_id))
        storage._write_config_to_file()
        response.status = CLIENT_CLOSED

    def resumable_incomplete(response, storage, upload_id, fallback_end=0):  # 2
        response.status = objects.GoogleHTTPStatus.RESUME_INCOMPLETE
        if received := storage.get_resumable_byte_count(upload_id):
            response["Range"] = f"bytes=0-{received - 1}"

    original_finalize, original_partial = objects._finalize_resumable_object, objects.upload_partial

    def finalize(response, storage, obj, data, upload_id):  # 3
        original_finalize(response, storage, obj, data, upload_id)
        finished[upload_id] = obj

    def upload_partial(request, response, storage, *args, **kwargs):
        if (obj := finished.get(request.query.get("upload_id", [""])[0])) is not None:
            return response.json(obj)
        return original_partial(request, response, storage, *args, **kwargs)

    def generation_checked(handler):  # 4
        def checked(request, response, storage, *args, **kwargs):
            wanted = request.query.get("ifGenerationMatch", [None])[0]
            if wanted is not None:
                try:
                    obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
                except NotFound:
                    return gcs_error(response, 404, "No such object", "notFound")
                if str(obj["generation"]) != wanted:
                    message = "At least one of the pre-conditions you specified did not hold."
                    return gcs_error(response, 412, message, "conditionNotMet")
            return handler(request, response, storage, *args, **kwargs)

        return checked

    def token(request, response, storage):  # 5
        form = parse_qs((request.data or b"").decode())
        email = verify_assertion(form.get("assertion", [""])[0], accounts)
        if email is None:
            response.status = HTTPStatus.BAD_REQUEST
            return response.json({"error": "invalid_grant", "error_description": "Invalid JWT Signature."})
        issued = f"ya29.{secrets.token_urlsafe(32)}"
        tokens[issued] = email
        response.json({"access_token": issued, "expires_in": 3599, "token_type": "Bearer"})

    original_handle = server.Router.handle

    def handle(router, method):
        handler = router._request_handler
        authorization = handler.headers.get("Authorization", "")
        denial = None
        if authorization.startswith("Bearer "):
            email = tokens.get(authorization.removeprefix("Bearer "))
            if email is None:
                denial = (401, "Invalid Credentials", "authError")
            elif accounts[email]["role"] != ROLES[WRITER] and method in WRITES:
                message = (
                    f"{email} does not have storage.objects.create access to the Google Cloud Storage object. "
                    "Permission 'storage.objects.create' denied on resource (or it may not exist)."
                )
                denial = (403, message, "forbidden")
        if denial is None:
            return original_handle(router, method)
        handler.rfile.read(int(handler.headers.get("Content-Length") or 0))  # so the client hears the answer
        response = server.Response(handler)
        gcs_error(response, *denial)
        response.close()

    objects._resumable_incomplete = resumable_incomplete
    objects._finalize_resumable_object = finalize
    replaced = {
        objects.upload_partial: upload_partial,
        objects.get: generation_checked(objects.get),
        objects.download: generation_checked(objects.download),
    }
    objects.download = replaced[objects.download]  # objects.get serves alt=media through it
    for pattern, methods in server.HANDLERS:
        for verb, handler in list(methods.items()):
            methods[verb] = replaced.get(handler, handler)
        if pattern.startswith(f"^{settings.UPLOAD_API_ENDPOINT}"):
            methods["DELETE"] = cancel_session
    server.HANDLERS = ((r"^/token$", {"POST": token}), *server.HANDLERS)
    server.Router.handle = handle


def serve(port, data_dir):
    import signal

    from gcp_storage_emulator.server import create_server

    patch_emulator(data_dir)
    emulator = create_server("127.0.0.1", port, in_memory=False, data_dir=str(data_dir))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    emulator.run()


if __name__ == "__main__":
    serve(int(sys.argv[1]), sys.argv[2])
