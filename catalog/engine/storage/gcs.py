"""Google Cloud Storage: objects streamed as a resumable upload, chunk by
chunk, whose size and CRC32C are confirmed after the last chunk.

Writes. A resumable upload session (GCS's JSON API) is opened once the first
whole chunk is written, then fed one chunk at a time (CHUNK_SIZE, a multiple
of 256 KiB as GCS requires of every chunk but the last). Memory stays at about
two chunks whatever the object's size: the bytes not yet held by the session,
and a copy of the chunk in flight. Nothing is visible under the key until the
last chunk arrives; GCS then makes the object at once. After a request that
failed, the session is asked how much it holds and the upload goes on from
there. commit() reads the object's metadata back and confirms its size and
CRC32C. An object smaller than one chunk is one plain upload at commit().
abort() cancels the session (DELETE of its URI), so no object appears.

Partials. An interrupted session leaves no object: only a completed upload
appears in the bucket. The session keeps its bytes on Google's side, outside
the bucket, until it is completed, cancelled, or expires a week after it
began, and no API lists sessions. So list_partials() returns nothing, and
remove_partial() and cleanup_partials() have nothing to remove: there is no
leftover in the bucket for the orphan scan to show.

Reads. open_reader() streams the object with one GET pinned to the generation
its metadata named (ifGenerationMatch). A stream that breaks mid-way is
resumed from the offset reached, by a ranged GET of that same generation, up
to max_attempts in all; an object replaced meanwhile fails the read instead
of splicing two objects together.

Every request is tried up to max_attempts times (throttling, server errors,
broken or timed-out connections), with exponential backoff and jitter. The
client library's own retries go by a deadline; they are turned off so that
the setting means here what it means for S3.

Credentials: a service account key (its JSON file), or anonymous credentials
for an emulator (an endpoint URL and no key). Errors are StorageErrors in
words that name the bucket; none carries the key, a token or a session URI
(the URI lets anyone holding it upload to the object, so its requests' errors
are raised without their cause).
"""

import base64
import contextlib
import json
import random
import re
import secrets
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import google.auth.exceptions
import google_crc32c
import requests
import urllib3.exceptions
from google.api_core import exceptions
from google.auth.credentials import AnonymousCredentials, Credentials
from google.auth.transport.requests import AuthorizedSession
from google.cloud import storage
from google.oauth2 import service_account

from catalog.engine.errors import StorageError
from catalog.engine.storage.base import PROBE_KEY, READ_CHUNK, Partial, check_key

CHUNK_SIZE = 8 << 20  # Google suggests chunks of at least 8 MiB; each is one request
CHUNK_MULTIPLE = 256 << 10
GOOGLE_API = "https://storage.googleapis.com"
SCOPES = ["https://www.googleapis.com/auth/devstorage.read_write"]
CONTENT_TYPE = "application/octet-stream"
TRANSIENT_CODES = {408, 429, 500, 502, 503, 504}
HELD_RANGE = re.compile(r"bytes=0-(\d+)")
PERMISSION = re.compile(r"storage\.[A-Za-z]+\.[A-Za-z]+")

Result = TypeVar("Result")


def is_transient(exc: BaseException) -> bool:
    """Whether trying the same request again may work."""
    if isinstance(exc, exceptions.GoogleAPICallError):
        return exc.code in TRANSIENT_CODES
    connection_errors = (
        google.auth.exceptions.TransportError,
        requests.ConnectionError,
        requests.Timeout,
        requests.exceptions.ChunkedEncodingError,
        urllib3.exceptions.HTTPError,
        ConnectionError,
    )
    return isinstance(exc, connection_errors)


def backoff(attempt: int) -> float:
    """Seconds to wait before try `attempt` + 1: exponential, with full jitter."""
    return random.uniform(0, min(0.5 * 2 ** (attempt - 1), 10))


def describe_gcs_error(exc: BaseException, storage: "GcsStorage") -> str:
    where, service = f"bucket {storage.bucket}", storage.service
    if isinstance(exc, google.auth.exceptions.RefreshError):
        details = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], dict) else {}
        code = f" ({details['error']})" if isinstance(details.get("error"), str) else ""
        return f"Google did not accept the service account key for {where}{code}"
    if isinstance(exc, google.auth.exceptions.TransportError):
        return f"Cannot reach Google's sign-in service for {where}"
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return f"Timed out connecting to {service} for {where}"
    if isinstance(exc, (requests.exceptions.ReadTimeout, urllib3.exceptions.ReadTimeoutError)):
        return f"{service} stopped answering (read timeout) for {where}"
    if isinstance(exc, requests.ConnectionError) and could_not_connect(exc):
        return f"Cannot reach {service} for {where}"
    if is_transient(exc) and not isinstance(exc, exceptions.GoogleAPICallError):
        return f"Lost the connection to {service} for {where}"
    if isinstance(exc, exceptions.Unauthorized):
        return f"{service} rejected the credentials for {where}"
    if isinstance(exc, exceptions.Forbidden):
        needed = PERMISSION.search(exc.message or "")
        return f"Permission denied on {where}" + (f": the account lacks {needed.group()}" if needed else "")
    if isinstance(exc, exceptions.NotFound):
        return f"Not found in {where}"
    if isinstance(exc, exceptions.GoogleAPICallError):
        # Never exc.message: it holds the request's URL, which for an upload is the session's URI.
        return f"Google Cloud Storage error on {where}: {exc.code} {type(exc).__name__}"
    return f"Google Cloud Storage error on {where}: {type(exc).__name__}"


def could_not_connect(exc: requests.ConnectionError) -> bool:
    """Whether the connection was never made (refused, no such host), rather than lost."""
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, urllib3.exceptions.NewConnectionError)


def credentials_for(service_account_json: str | None, endpoint_url: str | None, where: str) -> Credentials:
    """The key's credentials; anonymous ones for an emulator given no key."""
    if not service_account_json:
        if endpoint_url:
            return AnonymousCredentials()  # type: ignore[no-untyped-call]
        raise StorageError(f"No service account key is set for {where}")
    try:
        info = json.loads(service_account_json)
    except ValueError:
        raise StorageError(f"The service account key for {where} is not valid JSON") from None
    if not isinstance(info, dict) or info.get("type") != "service_account":
        raise StorageError(f"The key for {where} is not a service account key (its type is not service_account)")
    try:
        credentials: Credentials = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
            info, scopes=SCOPES
        )
    except (ValueError, KeyError, TypeError):
        # Not chained: the cause may quote the key.
        raise StorageError(
            f"The service account key for {where} cannot be used: it needs client_email, token_uri and "
            "private_key as Google wrote them"
        ) from None
    return credentials


def held_bytes(response: requests.Response) -> int:
    """How many bytes a resumable session says it holds (its Range header)."""
    match = HELD_RANGE.fullmatch(response.headers.get("Range", ""))
    return int(match.group(1)) + 1 if match else 0


class GcsWriter:
    """One object written through a resumable upload session, a chunk at a time."""

    def __init__(self, storage: "GcsStorage", key: str) -> None:
        self.storage = storage
        self.key = key
        self.blob = storage.blob(key)
        self.size = 0
        self._crc32c = 0  # CRC32C of everything written
        self._buffer = bytearray()  # written, and not yet held by the session
        self._held = 0  # bytes of the object the session holds (those before the buffer)
        self._session = ""  # its URI (once opened) lets anyone upload here: never shown
        self._finished = False  # the last chunk arrived: the object exists
        self._done = False

    def write(self, data: bytes) -> None:
        self._crc32c = google_crc32c.extend(self._crc32c, data)
        self.size += len(data)
        self._buffer += data
        while len(self._buffer) >= self.storage.chunk_size:
            self._send(final=False)

    def commit(self) -> int:
        try:
            if not self._session:
                self._upload_whole()
            else:
                self._send(final=True)
            stored = self.storage.metadata(self.key)
        except StorageError:
            self.abort()
            raise
        self._done = True
        if stored.size != self.size or stored.crc32c != self._expected_crc32c():
            with contextlib.suppress(StorageError):
                self.storage.delete(self.key)
            raise StorageError(
                f"Google Cloud Storage stored {stored.size} bytes of {self.size} for {self.key}, "
                "or they differ from those written"
            )
        return self.size

    def _expected_crc32c(self) -> str:
        """The CRC32C of everything written, base64 as GCS reports it."""
        return base64.b64encode(self._crc32c.to_bytes(4, "big")).decode()

    def _upload_whole(self) -> None:
        """An object smaller than a chunk: one request, its CRC32C checked by GCS."""
        data = bytes(self._buffer)
        self._buffer = bytearray()
        self.storage.attempt(
            lambda: self.blob.upload_from_string(
                data, content_type=CONTENT_TYPE, timeout=self.storage.timeout, retry=None, checksum="crc32c"
            ),
            self.key,
        )
        self._finished = True

    def _open_session(self) -> str:
        session: str = self.blob.create_resumable_upload_session(
            content_type=CONTENT_TYPE, timeout=self.storage.timeout, retry=None, checksum=None
        )
        return session

    def _send(self, final: bool) -> None:
        """Sends the next chunk (final: all that is left, ending the upload).
        After a failure the session is asked how much it holds first, since
        a request that broke may have delivered some or all of its bytes."""
        if not self._session:
            self._session = self.storage.attempt(self._open_session, self.key)
        attempt = 1
        while True:
            try:
                if attempt > 1:
                    self._ask_progress()
                if not self._finished:
                    self._put(final)
                return
            except StorageError:
                raise
            except Exception as exc:
                if attempt >= self.storage.max_attempts or not is_transient(exc):
                    raise StorageError(self._describe(exc, attempt)) from None  # the cause names the session
            time.sleep(backoff(attempt))
            attempt += 1

    def _describe(self, exc: Exception, attempts: int) -> str:
        if isinstance(exc, exceptions.GoogleAPICallError) and exc.code in (404, 410):
            return f"The upload session for {self.key} in bucket {self.storage.bucket} is gone (expired or cancelled)"
        return self.storage.error_text(exc, attempts, self.key)

    def _put(self, final: bool) -> None:
        length = len(self._buffer) if final else self.storage.chunk_size
        start, end = self._held, self._held + length
        total = str(end) if final else "*"
        content_range = f"bytes {start}-{end - 1}/{total}" if length else f"bytes */{total}"
        with memoryview(self._buffer) as view:
            body = bytes(view[:length])
        response = self.storage.http.put(
            self._session,
            data=body,
            headers={"Content-Range": content_range, "Content-Type": CONTENT_TYPE},
            timeout=self.storage.timeout,
        )
        del body
        self._took(response)

    def _ask_progress(self) -> None:
        response = self.storage.http.put(
            self._session, headers={"Content-Range": "bytes */*"}, timeout=self.storage.timeout
        )
        self._took(response)

    def _took(self, response: requests.Response) -> None:
        """Drops from the buffer what the session now holds."""
        if response.status_code == 308:  # "resume incomplete": it holds the range it names
            self._now_held(held_bytes(response))
        elif response.status_code in (200, 201):
            self._now_held(self._held + len(self._buffer))
            self._finished = True
        else:
            raise exceptions.from_http_response(response)  # type: ignore[no-untyped-call]

    def _now_held(self, held: int) -> None:
        if not self._held <= held <= self._held + len(self._buffer):
            raise StorageError(
                f"The upload session for {self.key} in bucket {self.storage.bucket} holds {held} bytes, "
                f"not the {self._held} it had confirmed or fewer than were sent"
            )
        del self._buffer[: held - self._held]
        self._held = held

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._buffer = bytearray()
        if self._session and not self._finished:
            with contextlib.suppress(Exception):  # GCS answers 499; an expired session is gone anyway
                self.storage.http.delete(self._session, timeout=self.storage.timeout)


class GcsStorage:
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        service_account_json: str | None = None,
        max_attempts: int = 3,
        connect_timeout: float = 10,
        read_timeout: float = 60,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        if chunk_size <= 0 or chunk_size % CHUNK_MULTIPLE:
            raise ValueError(f"A chunk is a multiple of {CHUNK_MULTIPLE} bytes, not {chunk_size}")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url or None
        # Messages name the endpoint's host and port only: the rest of a URL may be secret.
        self.service = urlsplit(endpoint_url).netloc.rpartition("@")[2] if endpoint_url else "Google Cloud Storage"
        self.max_attempts = max_attempts
        self.timeout = (connect_timeout, read_timeout)
        self.chunk_size = chunk_size
        credentials = credentials_for(service_account_json, self.endpoint_url, f"bucket {bucket}")
        self.api = (self.endpoint_url or GOOGLE_API).rstrip("/")
        try:
            self.client = storage.Client(
                project=None,
                credentials=credentials,
                client_options={"api_endpoint": self.api} if self.endpoint_url else None,
            )
        except ValueError as exc:  # e.g. a key from another universe than googleapis.com
            raise StorageError(f"The service account key cannot be used for bucket {bucket}: {exc}") from None
        # Uploads' chunks and reads' streams go through this session; the
        # client uses its own with the same credentials, so one token serves both.
        self.http = AuthorizedSession(credentials)  # type: ignore[no-untyped-call]

    def describe(self) -> str:
        return f"gs://{self.bucket}/{self.prefix}".rstrip("/")

    def full_key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def blob(self, key: str) -> Any:
        return self.client.bucket(self.bucket).blob(self.full_key(key))

    def attempt(self, request: Callable[[], Result], key: str = "") -> Result:
        """Runs one request, again after a transient failure, max_attempts tries in all."""
        attempt = 1
        while True:
            try:
                return request()
            except StorageError:
                raise
            except Exception as exc:
                if attempt >= self.max_attempts or not is_transient(exc):
                    raise StorageError(self.error_text(exc, attempt, key)) from exc
            time.sleep(backoff(attempt))
            attempt += 1

    def error_text(self, exc: Exception, attempts: int, key: str = "") -> str:
        if isinstance(exc, exceptions.NotFound):
            return self.not_found_text(key)
        text = describe_gcs_error(exc, self)
        return f"{text} (gave up after {attempts} attempts)" if attempts > 1 else text

    def not_found_text(self, key: str) -> str:
        """A 404 is the same answer for a missing object and a missing bucket on
        some servers; listing the bucket tells them apart (and needs no more
        than the storage.objects.list an account writing here has)."""
        if self.bucket_missing():
            return f"Google Cloud Storage bucket {self.bucket} does not exist"
        return f"{key or 'The object'} is missing from bucket {self.bucket}"

    def bucket_missing(self) -> bool:
        try:
            next(iter(self.client.list_blobs(self.bucket, max_results=1, timeout=self.timeout, retry=None)), None)
        except exceptions.NotFound:
            return True
        except Exception:
            return False  # cannot tell; the caller's own message stands
        return False

    def metadata(self, key: str) -> Any:
        """The object's blob with its metadata (size, generation, CRC32C) loaded."""
        blob = self.blob(key)
        self.attempt(lambda: blob.reload(timeout=self.timeout, retry=None), key)
        return blob

    def open_writer(self, key: str, retain_until: datetime | None = None) -> GcsWriter:
        return GcsWriter(self, key)

    def put_bytes(self, key: str, data: bytes, retain_until: datetime | None = None) -> None:
        writer = self.open_writer(key)
        writer.write(data)
        writer.commit()

    def get_bytes(self, key: str) -> bytes:
        return b"".join(self.open_reader(key))

    def media_url(self, name: str) -> str:
        """The JSON API's download URL of an object (its bytes, not its metadata)."""
        return f"{self.api}/download/storage/v1/b/{quote(self.bucket, safe='')}/o/{quote(name, safe='')}"

    def get_media(self, name: str, first: int, last: int | None = None, generation: int | None = None) -> Any:
        """A streaming GET of the object's bytes from `first` (to `last`), raising on an error answer."""
        headers = {"Accept-Encoding": "identity"}  # the stored bytes as they are
        if first or last is not None:
            headers["Range"] = f"bytes={first}-{'' if last is None else last}"
        params = {"alt": "media", **({"ifGenerationMatch": str(generation)} if generation is not None else {})}
        response = self.http.get(
            self.media_url(name), params=params, headers=headers, stream=True, timeout=self.timeout
        )
        if response.status_code not in (200, 206):
            response.close()
            raise exceptions.from_http_response(response)  # type: ignore[no-untyped-call]
        if first and response.status_code != 206:
            response.close()
            raise StorageError(f"{self.service} did not resume the read of {name} at byte {first}")
        return response

    def open_reader(self, key: str) -> Iterator[bytes]:
        """The object's chunks; a read that breaks mid-way is resumed from
        where it stopped, by a ranged GET of the same generation, max_attempts
        tries in all."""
        blob = self.metadata(key)
        name, size, generation = blob.name, int(blob.size), int(blob.generation)

        def chunks() -> Iterator[bytes]:
            offset, failures = 0, 0
            while offset < size:
                try:
                    response = self.get_media(name, offset, generation=generation)
                    try:
                        for chunk in response.iter_content(READ_CHUNK):
                            offset += len(chunk)
                            yield chunk
                    finally:
                        response.close()
                    if offset < size:
                        raise requests.exceptions.ChunkedEncodingError("the stream ended early")
                except StorageError:
                    raise
                except exceptions.PreconditionFailed:
                    raise StorageError(f"{key} in bucket {self.bucket} was replaced while it was being read") from None
                except Exception as exc:
                    failures += 1
                    if failures >= self.max_attempts or not is_transient(exc):
                        raise StorageError(self.error_text(exc, failures, key)) from exc
                    time.sleep(backoff(failures))

        return chunks()

    def read_head(self, key: str, length: int) -> bytes:
        """The first `length` bytes of an object, by a ranged GET."""

        def first_bytes() -> bytes:
            try:
                response = self.get_media(self.full_key(key), 0, length - 1)
            except exceptions.RequestRangeNotSatisfiable:
                return b""  # an empty object has no byte 0
            with response:
                data: bytes = response.content
            return data[:length]

        return self.attempt(first_bytes, key)

    def exists(self, key: str) -> bool:
        blob = self.blob(key)

        def load() -> bool:
            try:
                blob.reload(timeout=self.timeout, retry=None)
            except exceptions.NotFound:
                if self.bucket_missing():
                    raise
                return False
            return True

        return self.attempt(load, key)

    def size(self, key: str) -> int:
        return int(self.metadata(key).size)

    def delete(self, key: str) -> None:
        """Deletes the object; one already gone (or deleted by an attempt whose answer was lost) is fine."""
        blob = self.blob(key)

        def delete_once() -> None:
            try:
                blob.delete(timeout=self.timeout, retry=None)
            except exceptions.NotFound:
                if self.bucket_missing():
                    raise

        self.attempt(delete_once, key)

    def cleanup_partials(self, key: str) -> None:
        """Nothing to remove: an unfinished session leaves nothing in the bucket (module docstring)."""

    def list_keys(self, prefix: str = "") -> list[str]:
        return sorted(self._list(prefix))

    def list_sizes(self) -> dict[str, int]:
        return self._list()

    def list_partials(self) -> list[Partial]:
        """None: GCS keeps an unfinished upload out of the bucket and lists no sessions (module docstring)."""
        return []

    def remove_partial(self, partial: Partial) -> None:
        """Never asked: list_partials() lists none."""

    def _list(self, prefix: str = "") -> dict[str, int]:
        """{key relative to the prefix: size} of the objects under `prefix`."""
        base = f"{self.prefix}/" if self.prefix else ""

        def listing() -> dict[str, int]:
            blobs = self.client.list_blobs(self.bucket, prefix=base + prefix, timeout=self.timeout, retry=None)
            # A name ending in "/" is a folder made in the console, not an object Strongroom wrote.
            return {blob.name[len(base) :]: int(blob.size) for blob in blobs if not blob.name.endswith("/")}

        return self.attempt(listing)

    def probe(self) -> None:
        payload = secrets.token_bytes(64)
        self.put_bytes(PROBE_KEY, payload)
        if self.get_bytes(PROBE_KEY) != payload:
            raise StorageError(f"The probe read back from {self.describe()} differs from what was written")
        self.delete(PROBE_KEY)
