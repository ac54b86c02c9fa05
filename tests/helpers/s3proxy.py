"""A small HTTP/1.1 forwarding proxy for S3 traffic, used by tests.

The filesystem under test talks to the proxy (path-style addressing,
``endpoint_url=http://127.0.0.1:PORT``); the proxy forwards every request to an
upstream S3 server (normally moto's server) and relays the response.  On the way it

* counts requests per S3 operation, and
* injects faults on demand (error statuses, connection resets, stalls, dropped requests).

Run it as its own process so a test can ``kill -9`` it::

    python tests/helpers/s3proxy.py --upstream http://127.0.0.1:UPORT [--port 0]

It prints exactly one line, ``listening on PORT``, once it accepts connections, and
serves until SIGTERM/SIGINT.  The control API lives under ``/__proxy__/`` on the same
port and is never forwarded:

* ``GET  /__proxy__/counts`` -> ``{"PutObject": 3, ...}``
* ``POST /__proxy__/reset``  -> clears counts and fault rules
* ``POST /__proxy__/faults`` with a JSON rule -> installs the rule
* ``GET  /__proxy__/faults`` -> the rules, each with ``seen`` and ``fired`` counters

Import it to get :class:`S3Proxy`, which starts/stops the process and wraps the
control API.  Only the standard library is used.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import parse_qs, urlsplit

CONTROL_PREFIX = "/__proxy__/"
CHUNK = 1024 * 1024
UPSTREAM_TIMEOUT = 300.0

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
    }
)

ERROR_CODES: dict[int, str] = {
    500: "InternalError",
    503: "SlowDown",
    403: "AccessDenied",
    404: "NoSuchKey",
}
GENERIC_ERROR_CODE = "InjectedFault"

ACTIONS = frozenset({"status", "reset", "stall", "drop"})

# Query parameters that a plain ListObjects (v1) request may carry; a GET on a bucket
# with any other query key is a sub-resource call (location, versioning, ...) -> "Other".
_LIST_OBJECTS_PARAMS = frozenset({"prefix", "delimiter", "marker", "max-keys", "encoding-type"})


# --------------------------------------------------------------------------------------
# Operation classification
# --------------------------------------------------------------------------------------


def classify(method: str, target: str, has_copy_source: bool = False) -> str:
    """Map a path-style S3 request to its operation name (``"Other"`` if unknown)."""
    parts = urlsplit(target)
    query = parse_qs(parts.query, keep_blank_values=True)
    path = parts.path.lstrip("/")
    bucket, _, key = path.partition("/")
    method = method.upper()

    if method == "HEAD":
        if not bucket:
            return "Other"
        return "HeadObject" if key else "HeadBucket"

    if method == "GET":
        if not bucket:
            return "ListBuckets" if not query else "Other"
        if "uploadId" in query:
            return "ListParts"
        if "uploads" in query:
            return "ListMultipartUploads"
        if key:
            return "GetObjectTagging" if "tagging" in query else "GetObject"
        if query.get("list-type") == ["2"]:
            return "ListObjectsV2"
        if set(query) <= _LIST_OBJECTS_PARAMS:
            return "ListObjects"
        return "Other"

    if method == "PUT":
        if not bucket:
            return "Other"
        if "partNumber" in query and "uploadId" in query:
            return "UploadPartCopy" if has_copy_source else "UploadPart"
        if key:
            if "tagging" in query:
                return "PutObjectTagging"
            if query:
                return "Other"
            return "CopyObject" if has_copy_source else "PutObject"
        return "CreateBucket" if not query else "Other"

    if method == "POST":
        if "uploads" in query:
            return "CreateMultipartUpload"
        if "uploadId" in query:
            return "CompleteMultipartUpload"
        if "delete" in query:
            return "DeleteObjects"
        return "Other"

    if method == "DELETE":
        if not bucket:
            return "Other"
        if "uploadId" in query:
            return "AbortMultipartUpload"
        if key:
            if "tagging" in query:
                return "DeleteObjectTagging"
            return "DeleteObject" if not query else "Other"
        return "DeleteBucket" if not query else "Other"

    return "Other"


# --------------------------------------------------------------------------------------
# Fault rules and shared proxy state
# --------------------------------------------------------------------------------------


@dataclass
class FaultRule:
    """One installed fault-injection rule."""

    id: int
    op: str
    action: str
    status: int = 500
    seconds: float | None = None
    nth: int = 1
    times: int = 1
    fraction: float | None = None
    seed: int | None = None
    seen: int = 0
    fired: int = 0
    _rng: random.Random | None = field(default=None, repr=False)

    @classmethod
    def from_json(cls, rule_id: int, data: Any) -> FaultRule:
        if not isinstance(data, dict):
            raise ValueError("fault rule must be a JSON object")
        known = {"op", "action", "status", "seconds", "nth", "times", "fraction", "seed"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault rule fields: {sorted(unknown)}")
        op = data.get("op")
        action = data.get("action")
        if not isinstance(op, str) or not op:
            raise ValueError("'op' must be a non-empty string")
        if action not in ACTIONS:
            raise ValueError(f"'action' must be one of {sorted(ACTIONS)}")
        status = data.get("status", 500)
        if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
            raise ValueError("'status' must be an HTTP status code")
        seconds = data.get("seconds")
        if seconds is not None:
            if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
                raise ValueError("'seconds' must be a non-negative number")
            seconds = float(seconds)
        if action == "stall" and seconds is None:
            raise ValueError("'stall' needs 'seconds'")
        fraction = data.get("fraction")
        if fraction is not None:
            if "nth" in data:
                raise ValueError("give either 'nth' or 'fraction', not both")
            if not isinstance(fraction, int | float) or not 0.0 <= fraction <= 1.0:
                raise ValueError("'fraction' must be within 0..1")
            fraction = float(fraction)
        nth = data.get("nth", 1)
        if not isinstance(nth, int) or isinstance(nth, bool) or nth < 1:
            raise ValueError("'nth' must be an integer >= 1")
        # With 'fraction' the rule fires without a cap unless 'times' is given.
        times = data.get("times", -1 if fraction is not None else 1)
        if not isinstance(times, int) or isinstance(times, bool) or (times < 1 and times != -1):
            raise ValueError("'times' must be an integer >= 1, or -1 for forever")
        seed = data.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise ValueError("'seed' must be an integer")
        rule = cls(
            id=rule_id,
            op=op,
            action=action,
            status=status,
            seconds=seconds,
            nth=nth,
            times=times,
            fraction=fraction,
            seed=seed,
        )
        if fraction is not None:
            rule._rng = random.Random(seed)
        return rule

    def matches(self, op: str) -> bool:
        return self.op == "*" or self.op == op

    def observe(self) -> bool:
        """Count one matching request; return whether the rule fires for it."""
        self.seen += 1
        if self._rng is not None and self.fraction is not None:
            # One draw per matching request, so the sequence only depends on the seed.
            hit = self._rng.random() < self.fraction
            return hit and (self.times == -1 or self.fired < self.times)
        if self.seen < self.nth:
            return False
        return self.times == -1 or self.seen < self.nth + self.times

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "op": self.op,
            "action": self.action,
            "times": self.times,
            "seen": self.seen,
            "fired": self.fired,
        }
        if self.action == "status":
            out["status"] = self.status
        if self.seconds is not None:
            out["seconds"] = self.seconds
        if self.fraction is not None:
            out["fraction"] = self.fraction
            out["seed"] = self.seed
        else:
            out["nth"] = self.nth
        return out


class ProxyState:
    """Counters and fault rules shared by all handler threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._rules: list[FaultRule] = []
        self._next_id = 1

    def record(self, op: str) -> FaultRule | None:
        """Count a request and return the first fault rule that fires for it, if any.

        Every matching rule sees the request (its ``seen`` counter and, for fraction
        rules, its random sequence advance); only the first one that fires is applied.
        """
        with self._lock:
            self._counts[op] = self._counts.get(op, 0) + 1
            chosen: FaultRule | None = None
            for rule in self._rules:
                if rule.matches(op) and rule.observe() and chosen is None:
                    rule.fired += 1
                    chosen = rule
            return chosen

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()
            self._rules.clear()

    def add_rule(self, data: Any) -> FaultRule:
        with self._lock:
            rule = FaultRule.from_json(self._next_id, data)
            self._next_id += 1
            self._rules.append(rule)
            return rule

    def rules(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r.to_json() for r in self._rules]


class ProxyServer(ThreadingHTTPServer):
    """Threading server carrying the upstream address, shared state and stop event."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], upstream: str, verbose: bool = False) -> None:
        parts = urlsplit(upstream)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"bad upstream URL: {upstream!r}")
        self.upstream_https = parts.scheme == "https"
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port or (443 if self.upstream_https else 80)
        self.state = ProxyState()
        self.stopping = threading.Event()
        self.verbose = verbose
        super().__init__(address, ProxyHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError | ValueError):  # client vanished, socket reset, ...
            return
        super().handle_error(request, client_address)


# --------------------------------------------------------------------------------------
# Request handler
# --------------------------------------------------------------------------------------


class ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "s3proxy/1"
    disable_nagle_algorithm = True
    server: ProxyServer

    _upstream: http.client.HTTPConnection | None = None
    _aborted = False

    # -- plumbing ---------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        if self.server.verbose:
            super().log_message(format, *args)

    def finish(self) -> None:
        if self._upstream is not None:
            self._upstream.close()
            self._upstream = None
        if self._aborted:
            return  # socket already torn down by a "reset" fault
        with contextlib.suppress(OSError, ValueError):
            super().finish()

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch()

    do_HEAD = do_PUT = do_POST = do_DELETE = do_OPTIONS = do_PATCH = do_GET  # noqa: N815

    def _dispatch(self) -> None:
        try:
            if self.path.startswith(CONTROL_PREFIX):
                self._control()
            else:
                self._proxy()
        except (ConnectionError, TimeoutError, OSError):
            # The client went away (or a fault tore the socket down): stop this connection.
            self.close_connection = True

    # -- request body -----------------------------------------------------------------

    def _read_body(self) -> bytes:
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            return self._read_chunked()
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        n = int(length)
        if n < 0:
            raise ValueError("negative Content-Length")
        data = self.rfile.read(n)
        if len(data) != n:
            raise ConnectionError("client closed the connection mid-body")
        return data

    def _read_chunked(self) -> bytes:
        pieces: list[bytes] = []
        while True:
            line = self.rfile.readline(65537)
            if not line:
                raise ConnectionError("client closed the connection mid-chunk")
            size = int(line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                break
            data = self.rfile.read(size)
            if len(data) != size:
                raise ConnectionError("client closed the connection mid-chunk")
            pieces.append(data)
            self.rfile.readline(65537)  # CRLF after the chunk data
        while True:  # trailers, discarded
            line = self.rfile.readline(65537)
            if line in (b"\r\n", b"\n", b""):
                break
        return b"".join(pieces)

    # -- responses of our own -----------------------------------------------------------

    def _send_simple(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, obj: Any) -> None:
        self._send_simple(status, json.dumps(obj).encode(), "application/json")

    def _send_s3_error(self, status: int, code: str, message: str) -> None:
        request_id = f"s3proxy-{time.monotonic_ns():x}"
        resource = urlsplit(self.path).path
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message>"
            f"<Resource>{_xml_escape(resource)}</Resource>"
            f"<RequestId>{request_id}</RequestId><HostId>s3proxy</HostId></Error>"
        ).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("x-amz-request-id", request_id)
        if self.command == "HEAD":
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    # -- control API --------------------------------------------------------------------

    def _control(self) -> None:
        body = self._read_body()
        route = urlsplit(self.path).path[len(CONTROL_PREFIX) :].strip("/")
        state = self.server.state
        if route == "counts" and self.command == "GET":
            self._send_json(200, state.counts())
        elif route == "reset" and self.command == "POST":
            state.reset()
            self._send_json(200, {"ok": True})
        elif route == "faults" and self.command == "GET":
            self._send_json(200, state.rules())
        elif route == "faults" and self.command == "POST":
            try:
                rule = state.add_rule(json.loads(body or b"null"))
            except (ValueError, TypeError) as exc:
                self._send_json(400, {"error": str(exc)})
                return
            self._send_json(200, rule.to_json())
        else:
            self._send_json(404, {"error": f"no control endpoint {self.command} {route!r}"})

    # -- forwarding ---------------------------------------------------------------------

    def _proxy(self) -> None:
        op = classify(self.command, self.path, "x-amz-copy-source" in self.headers)
        rule = self.server.state.record(op)
        body = self._read_body()

        if rule is not None:
            if rule.action == "status":
                code = ERROR_CODES.get(rule.status, GENERIC_ERROR_CODE)
                self._send_s3_error(rule.status, code, f"Injected by s3proxy (rule {rule.id})")
                return
            if rule.action == "reset":
                self._abort_connection()
                return
            if rule.action == "drop":
                self.server.stopping.wait(rule.seconds)
                self.close_connection = True
                return
            if rule.action == "stall" and self.server.stopping.wait(rule.seconds or 0.0):
                self.close_connection = True
                return

        self._forward(body)

    def _abort_connection(self) -> None:
        """Close the client socket with SO_LINGER 0 so the peer sees ECONNRESET."""
        sock = self.connection
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # The buffered reader holds a reference on the socket; drop it first so that
        # close() really closes the descriptor (and sends the RST) right now.
        with contextlib.suppress(OSError, ValueError):
            self.rfile.close()
        with contextlib.suppress(OSError):
            sock.close()
        self._aborted = True
        self.close_connection = True

    def _upstream_conn(self) -> http.client.HTTPConnection:
        if self._upstream is None:
            srv = self.server
            cls = http.client.HTTPSConnection if srv.upstream_https else http.client.HTTPConnection
            self._upstream = cls(srv.upstream_host, srv.upstream_port, timeout=UPSTREAM_TIMEOUT)
        return self._upstream

    def _forward_headers(self, body_len: int) -> list[tuple[str, str]]:
        extra_hop = {
            token.strip().lower()
            for value in self.headers.get_all("Connection", [])
            for token in value.split(",")
        }
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        has_length = False
        out: list[tuple[str, str]] = []
        for name, value in self.headers.items():
            lname = name.lower()
            if lname in HOP_BY_HOP or lname in extra_hop or lname.startswith("proxy-"):
                continue
            if lname == "expect":  # 100-continue was already answered by us
                continue
            if lname == "content-length":
                if chunked:
                    continue  # RFC 9112: Transfer-Encoding wins; we send the real length
                has_length = True
            out.append((name, value))
        if not has_length and (body_len or self.command in ("PUT", "POST", "PATCH")):
            # De-chunked body (or none at all): upstream gets an explicit length.
            out.append(("Content-Length", str(body_len)))
        return out

    def _send_upstream(self, body: bytes) -> http.client.HTTPResponse:
        headers = self._forward_headers(len(body))
        for attempt in range(2):
            conn = self._upstream_conn()
            reused = conn.sock is not None
            try:
                conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for name, value in headers:
                    conn.putheader(name, value)
                conn.endheaders(body if body else None)
                return conn.getresponse()
            except (ConnectionError, http.client.HTTPException):
                conn.close()
                self._upstream = None
                # A kept-alive connection may have been closed by upstream while idle:
                # retry once on a fresh one.  Fresh connections fail for real.
                if not reused or attempt == 1:
                    raise
        raise AssertionError("unreachable")

    def _forward(self, body: bytes) -> None:
        try:
            resp = self._send_upstream(body)
        except (OSError, http.client.HTTPException) as exc:
            self._send_s3_error(502, "BadGateway", f"s3proxy: upstream failed: {exc}")
            return
        try:
            self._relay(resp)
        except BaseException:
            # Mid-response failure: neither connection is in a known state any more.
            if self._upstream is not None:
                self._upstream.close()
                self._upstream = None
            self.close_connection = True
            raise
        finally:
            resp.close()

    def _relay(self, resp: http.client.HTTPResponse) -> None:
        status = resp.status
        has_body = self.command != "HEAD" and status not in (204, 304) and status >= 200
        self.send_response_only(status, resp.reason)
        extra_hop = {
            token.strip().lower()
            for value in resp.headers.get_all("Connection", [])
            for token in value.split(",")
        }
        has_length = False
        for name, value in resp.getheaders():
            lname = name.lower()
            if lname in HOP_BY_HOP or lname in extra_hop or lname.startswith("proxy-"):
                continue
            if lname == "content-length":
                has_length = True
            self.send_header(name, value)
        chunked = False
        if has_body and not has_length:
            if self.request_version >= "HTTP/1.1":
                self.send_header("Transfer-Encoding", "chunked")
                chunked = True
            else:
                self.send_header("Connection", "close")
        self.end_headers()

        if has_body:
            buf = bytearray(CHUNK)
            view = memoryview(buf)
            while True:
                n = resp.readinto(buf)
                if not n:
                    break
                if chunked:
                    self.wfile.write(b"%x\r\n" % n)
                    self.wfile.write(view[:n])
                    self.wfile.write(b"\r\n")
                else:
                    self.wfile.write(view[:n])
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        else:
            resp.read()  # nothing to relay; lets the upstream connection be reused


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# --------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Counting, fault-injecting S3 proxy")
    parser.add_argument("--upstream", required=True, help="e.g. http://127.0.0.1:5000")
    parser.add_argument("--port", type=int, default=0, help="0 = any free port")
    parser.add_argument("--verbose", action="store_true", help="log requests to stderr")
    args = parser.parse_args(argv)

    server = ProxyServer(("127.0.0.1", args.port), args.upstream, verbose=args.verbose)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        server.stopping.set()
        # shutdown() blocks until serve_forever() returns, so not from this thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    print(f"listening on {server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.stopping.set()
        server.server_close()
    return 0


# --------------------------------------------------------------------------------------
# Client class for tests
# --------------------------------------------------------------------------------------


class S3Proxy:
    """Runs the proxy as a subprocess and talks to its control API."""

    START_TIMEOUT = 10.0
    STOP_TIMEOUT = 10.0
    CONTROL_TIMEOUT = 10.0

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.url = ""
        self.pid = 0
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> S3Proxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- process lifecycle ------------------------------------------------------------

    def start(self) -> None:
        if self._proc is not None:
            raise RuntimeError("proxy already started")
        script = Path(__file__).resolve()
        proc = subprocess.Popen(
            [sys.executable, str(script), "--upstream", self.upstream, "--port", "0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
        )
        self._proc = proc
        self.pid = proc.pid
        try:
            self.port = self._wait_listening(proc)
        except BaseException:
            self.stop()
            raise
        self.url = f"http://127.0.0.1:{self.port}"

    def _wait_listening(self, proc: subprocess.Popen[bytes]) -> int:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        deadline = time.monotonic() + self.START_TIMEOUT
        data = b""
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in data:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"s3proxy did not report a port within {self.START_TIMEOUT}s"
                    )
                if not sel.select(remaining):
                    continue
                chunk = os.read(fd, 4096)
                if not chunk:
                    proc.wait(timeout=self.STOP_TIMEOUT)
                    raise RuntimeError(f"s3proxy exited early with status {proc.returncode}")
                data += chunk
        line = data.split(b"\n", 1)[0].decode().strip()
        prefix = "listening on "
        if not line.startswith(prefix):
            raise RuntimeError(f"unexpected first line from s3proxy: {line!r}")
        return int(line[len(prefix) :])

    def kill(self) -> None:
        """SIGKILL the proxy (simulates the S3 endpoint dying) and reap it."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=self.STOP_TIMEOUT)
        self._close_pipes()

    def stop(self) -> None:
        """SIGTERM, wait up to STOP_TIMEOUT, then SIGKILL.  Idempotent."""
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=self.STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=self.STOP_TIMEOUT)
        self._close_pipes()

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def _close_pipes(self) -> None:
        if self._proc is not None and self._proc.stdout is not None:
            self._proc.stdout.close()

    # -- control API ----------------------------------------------------------------------

    def _call(self, method: str, route: str, payload: Any = None) -> Any:
        if not self.url:
            raise RuntimeError("proxy not started")
        data = None if payload is None else json.dumps(payload).encode()
        if method == "POST" and data is None:
            data = b""
        req = urllib.request.Request(
            f"{self.url}{CONTROL_PREFIX}{route}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=self.CONTROL_TIMEOUT) as resp:
            return json.loads(resp.read())

    def counts(self) -> dict[str, int]:
        result: dict[str, int] = self._call("GET", "counts")
        return result

    def reset(self) -> None:
        self._call("POST", "reset")

    def add_fault(self, op: str, action: str, **kw: Any) -> None:
        self._call("POST", "faults", {"op": op, "action": action, **kw})

    def faults(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "faults")
        return result


if __name__ == "__main__":
    sys.exit(main())
