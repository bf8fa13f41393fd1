"""A fault-injecting HTTP proxy in front of the moto S3 server.

A test points a destination's endpoint URL at the proxy and tells it, through
a thread-safe fault plan, what to do to the next requests of a kind: answer
with an S3 error (500 InternalError, 503 ServiceUnavailable, 503 SlowDown, as
real S3 sends them), reset the connection before or after the request reached
the server or in the middle of the response body, stall past the client's read
timeout, or be `down` altogether. Every request is recorded (operation, time,
what was done) so the test can count retries and measure their spacing.
"""

import contextlib
import http.client
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

ERRORS = {
    "500": (500, "InternalError", "We encountered an internal error. Please try again."),
    "503": (503, "ServiceUnavailable", "Service is unable to handle request."),
    "slowdown": (503, "SlowDown", "Please reduce your request rate."),
    # What MinIO and others answer to completing an upload that is already complete.
    "nosuchupload": (
        404,
        "NoSuchUpload",
        "The specified upload does not exist. The upload ID may be invalid, "
        "or the upload may have been aborted or completed.",
    ),
}
# What a fault does: answer an error without forwarding; reset before
# forwarding; forward, then reset instead of answering; send the headers and
# half the body, then reset; stall until the client gives up.
ACTIONS = set(ERRORS) | {"reset", "reset_after_forward", "reset_mid_body", "stall"}


def operation(method, path, query):
    """The S3 operation a request is, in boto3's words."""
    if method == "POST" and "uploads" in query:
        return "create_multipart_upload"
    if method == "PUT" and "partNumber" in query and "uploadId" in query:
        return "upload_part"
    if method == "POST" and "uploadId" in query:
        return "complete_multipart_upload"
    if method == "DELETE" and "uploadId" in query:
        return "abort_multipart_upload"
    if method == "GET" and "uploads" in query:
        return "list_multipart_uploads"
    bucket_only = path.strip("/").count("/") == 0
    names = {"PUT": "put_object", "GET": "get_object", "HEAD": "head_object", "DELETE": "delete_object"}
    if bucket_only:
        names = {"GET": "list_objects", "HEAD": "head_bucket", "PUT": "create_bucket", "POST": "delete_objects"}
    return names.get(method, method.lower())


@dataclass
class Seen:
    op: str
    method: str
    key: str
    at: float
    part: int = None  # an upload's part number
    action: str = "forward"  # or the fault applied
    status: int = None
    client_gave_up: bool = False  # a stalled request the client closed before the stall ended


@dataclass
class Fault:
    action: str
    op: str = None  # None: any operation
    key_suffix: str = ""
    part: int = None
    times: int = None  # None: every matching request until cleared
    applied: int = 0

    def matches(self, seen):
        return (
            (self.op is None or seen.op == self.op)
            and seen.key.endswith(self.key_suffix)
            and (self.part is None or seen.part == self.part)
        )


@dataclass
class FaultPlan:
    faults: list = field(default_factory=list)
    seen: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    down_after: str = None  # "*": down now; an operation: down once one of those went through

    def add(self, action, op=None, times=1, key_suffix="", part=None):
        """The next `times` requests of `op` (and key suffix, part number) get `action`."""
        assert action in ACTIONS, action
        with self.lock:
            self.faults.append(Fault(action, op, key_suffix, part, times))

    def down(self, after="*"):
        """Every request from now on (or from the first one after a request of
        operation `after` went through) has its connection reset."""
        with self.lock:
            self.down_after = after

    def heal(self):
        with self.lock:
            self.faults.clear()
            self.down_after = None

    def is_down(self):
        return self.down_after == "*" or any(s.op == self.down_after and s.action == "forward" for s in self.seen)

    def decide(self, seen):
        with self.lock:
            if self.down_after and self.is_down():
                seen.action = "reset"
            self.seen.append(seen)
            if seen.action != "forward":
                return seen.action
            for fault in self.faults:
                if fault.matches(seen) and (fault.times is None or fault.applied < fault.times):
                    fault.applied += 1
                    seen.action = fault.action
                    break
            return seen.action

    def requests(self, op=None):
        with self.lock:
            return [s for s in self.seen if op is None or s.op == op]

    def pending(self):
        """Faults planned for a number of requests that have not all happened."""
        with self.lock:
            return [f for f in self.faults if f.times is not None and f.applied < f.times]


def error_body(code, message, key):
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message><Resource>/{key}</Resource>"
        f"<RequestId>FAULT{int(time.monotonic() * 1000)}</RequestId></Error>"
    ).encode()


class ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as botocore expects

    def log_message(self, *args):
        pass

    def do_request(self):
        body = self.read_body()
        parts = urlsplit(self.path)
        query = parse_qs(parts.query, keep_blank_values=True)
        part = int(query["partNumber"][0]) if "partNumber" in query else None
        seen = Seen(
            operation(self.command, parts.path, query), self.command, parts.path.lstrip("/"), time.monotonic(), part
        )
        action = self.server.plan.decide(seen)
        if action in ERRORS:
            status, code, message = ERRORS[action]
            seen.status = status
            payload = error_body(code, message, seen.key)
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload if self.command != "HEAD" else b"")
            return
        if action == "reset":
            return self.reset()
        if action == "stall":
            seen.client_gave_up = self.client_gives_up(self.server.stall_seconds)
            return self.reset()
        status, headers, payload = self.forward(body)
        seen.status = status
        if action == "reset_after_forward":
            return self.reset()
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in ("transfer-encoding", "connection", "content-length", "date", "server"):
                self.send_header(name, value)
        # A HEAD answer has no body but tells the object's length.
        length = dict((k.lower(), v) for k, v in headers).get("content-length") if self.command == "HEAD" else None
        self.send_header("Content-Length", length or str(len(payload)))
        self.end_headers()
        if action == "reset_mid_body" and len(payload) > 1:
            self.wfile.write(payload[: len(payload) // 2])
            self.wfile.flush()
            return self.reset()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_request

    def client_gives_up(self, seconds):
        """Waits `seconds` (less if the proxy stops) for the client to close
        the connection; True if it did."""
        deadline = time.monotonic() + seconds
        while not self.server.stopping.is_set() and time.monotonic() < deadline:
            readable, _, _ = select.select([self.connection], [], [], 0.1)
            if not readable:
                continue
            try:
                if self.connection.recv(1, socket.MSG_PEEK) == b"":
                    return True
            except OSError:
                return True
            time.sleep(0.1)  # something more from the client: not an answer to wait for
        return False

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while (size := int(self.rfile.readline().split(b";")[0], 16)) > 0:
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def forward(self, body):
        upstream = http.client.HTTPConnection(self.server.upstream_host, self.server.upstream_port, timeout=30)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("transfer-encoding", "connection")}
            headers["Content-Length"] = str(len(body))
            upstream.request(self.command, self.path, body=body, headers=headers)
            response = upstream.getresponse()
            payload = response.read()
            return response.status, response.getheaders(), payload
        finally:
            upstream.close()

    def reset(self):
        """Closes the connection with a TCP reset (SO_LINGER 0), no response."""
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        for stream in (self.rfile, self.wfile):
            with contextlib.suppress(OSError):
                stream.close()
        self.connection.close()


class FaultyProxy(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream_url, stall_seconds=30):
        super().__init__(("127.0.0.1", 0), ProxyHandler)
        upstream = urlsplit(upstream_url)
        self.upstream_host, self.upstream_port = upstream.hostname, upstream.port
        self.plan = FaultPlan()
        self.stall_seconds = stall_seconds
        self.stopping = threading.Event()
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()

    def shutdown_request(self, request):
        with contextlib.suppress(OSError):  # already reset on purpose
            super().shutdown_request(request)

    def handle_error(self, request, client_address):
        pass  # a client that gave up (timeout) or a reset we made: not the test's business

    def stop(self):
        self.stopping.set()
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=5)
