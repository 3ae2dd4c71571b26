"""A fault-injecting HTTP proxy on loopback, in front of MinIO, for reliability tests.

Point a store's ``endpoint_url`` at ``proxy.endpoint`` and tell the proxy what to
break::

    with FaultProxy(minio.endpoint) as proxy:
        proxy.fail_next(2, Fault.error(503, "SlowDown"))     # next 2 requests
        proxy.fail_fraction(0.2, Fault.reset(), seed=7)      # ~20% of requests
        store = S3Store(url, endpoint_url=proxy.endpoint)

Faults: an S3 XML error response, a delay before forwarding, a connection reset
before forwarding (the request never reaches MinIO), or ``drop_response``: the
request *is* applied by MinIO but the client sees a reset instead of the answer
(the ambiguous case for conditional writes), or ``truncate``: the response breaks
off halfway through its body. SigV4 signatures stay valid because
the ``Host`` header and body are forwarded untouched.
"""

from __future__ import annotations

import http.client
import random
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Literal
from urllib.parse import urlsplit

FaultKind = Literal["error", "delay", "reset", "drop_response", "truncate"]

# Hop-by-hop headers the proxy handles itself. Expect is answered by this proxy
# (and is never part of a SigV4 signature), so it is not forwarded.
_HOP_HEADERS = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade", "expect"}
)


@dataclass(frozen=True)
class Fault:
    """What to do to one request."""

    kind: FaultKind
    status: int = 503
    code: str = "SlowDown"
    delay: float = 0.0

    @staticmethod
    def error(status: int = 503, code: str = "SlowDown") -> Fault:
        """Answer with an S3-style XML error instead of forwarding."""
        return Fault("error", status=status, code=code)

    @staticmethod
    def slow(seconds: float) -> Fault:
        """Forward after ``seconds``."""
        return Fault("delay", delay=seconds)

    @staticmethod
    def reset() -> Fault:
        """Reset the client connection without forwarding."""
        return Fault("reset")

    @staticmethod
    def drop_response() -> Fault:
        """Forward (MinIO applies it), then reset instead of relaying the answer."""
        return Fault("drop_response")

    @staticmethod
    def truncate() -> Fault:
        """Relay the answer's headers and half its body, then reset (a broken stream)."""
        return Fault("truncate")


Matcher = Callable[[str, str], bool]


@dataclass
class _Plan:
    fault: Fault
    remaining: int | None  # None: apply by fraction, indefinitely
    fraction: float = 1.0
    rng: random.Random = field(default_factory=random.Random)
    match: Matcher | None = None


@dataclass(frozen=True)
class Seen:
    """One request the proxy handled."""

    method: str
    path: str
    fault: FaultKind | None


class FaultProxy:
    """A threaded HTTP/1.1 proxy on 127.0.0.1 with programmable faults."""

    def __init__(self, upstream: str) -> None:
        """``upstream`` is ``http://host:port`` (MinIO's endpoint)."""
        parts = urlsplit(upstream)
        assert parts.hostname and parts.port, upstream
        self.upstream_host: str = parts.hostname
        self.upstream_port: int = parts.port
        self._lock = threading.Lock()
        self._plans: list[_Plan] = []
        self.seen: list[Seen] = []
        self._server = _Server(("127.0.0.1", 0), _make_handler(self))
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:<port>`` to give to the client."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # -- programming faults --------------------------------------------------------

    def fail_next(self, n: int, fault: Fault, *, match: Matcher | None = None) -> None:
        """Apply ``fault`` to the next ``n`` requests (that ``match(method, path)``)."""
        with self._lock:
            self._plans.append(_Plan(fault, remaining=n, match=match))

    def fail_fraction(
        self, fraction: float, fault: Fault, *, seed: int = 0, match: Matcher | None = None
    ) -> None:
        """Apply ``fault`` to each request with probability ``fraction`` (seeded RNG)."""
        with self._lock:
            self._plans.append(
                _Plan(
                    fault, remaining=None, fraction=fraction, rng=random.Random(seed), match=match
                )
            )

    def clear(self) -> None:
        """Remove all planned faults."""
        with self._lock:
            self._plans.clear()

    def faults_injected(self) -> int:
        """How many requests got a fault so far."""
        with self._lock:
            return sum(1 for s in self.seen if s.fault is not None)

    def _choose(self, method: str, path: str) -> Fault | None:
        with self._lock:
            chosen: Fault | None = None
            for plan in self._plans:
                if plan.match is not None and not plan.match(method, path):
                    continue
                if plan.remaining is not None:
                    if plan.remaining > 0:
                        plan.remaining -= 1
                        chosen = plan.fault
                        break
                elif plan.rng.random() < plan.fraction:
                    chosen = plan.fault
                    break
            self._plans = [p for p in self._plans if p.remaining != 0]
            self.seen.append(Seen(method, path, chosen.kind if chosen else None))
            return chosen


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Clients keep idle keep-alive connections open; stop() must not wait for them.
    block_on_close = False


def _make_handler(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        upstream: http.client.HTTPConnection | None = None

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep test output clean

        def _read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                # Kept framed: the body is forwarded byte for byte.
                out = bytearray()
                while True:
                    line = self.rfile.readline()
                    out += line
                    size = int(line.split(b";")[0].strip(), 16)
                    if size == 0:
                        while (trailer := self.rfile.readline()) not in (b"\r\n", b"\n", b""):
                            out += trailer
                        out += b"\r\n"
                        return bytes(out)
                    out += self.rfile.read(size + 2)
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _reset(self) -> None:
            # SO_LINGER 0 makes close() send RST instead of FIN: a hard reset.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True

        def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
            for attempt in range(2):
                if self.upstream is None:
                    self.upstream = http.client.HTTPConnection(
                        proxy.upstream_host, proxy.upstream_port, timeout=120
                    )
                conn = self.upstream
                try:
                    conn.putrequest(
                        self.command, self.path, skip_host=True, skip_accept_encoding=True
                    )
                    for name, value in self.headers.items():
                        if name.lower() not in _HOP_HEADERS:
                            conn.putheader(name, value)
                    conn.endheaders(body or None)
                    resp = conn.getresponse()
                    data = resp.read()
                    return resp.status, resp.reason, resp.getheaders(), data
                except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                    # MinIO closed an idle keep-alive connection: reconnect once.
                    conn.close()
                    self.upstream = None
                    if attempt == 1:
                        raise
            raise AssertionError("unreachable")

        def _respond(
            self,
            status: int,
            reason: str,
            headers: list[tuple[str, str]],
            body: bytes,
            send: int | None = None,
        ) -> None:
            lines = [f"HTTP/1.1 {status} {reason}"]
            bodyless = self.command == "HEAD" or status in (204, 304)
            for name, value in headers:
                low = name.lower()
                if low in _HOP_HEADERS or low == "transfer-encoding":
                    continue
                if low == "content-length" and not bodyless:
                    continue  # re-set below from the body actually relayed
                lines.append(f"{name}: {value}")
            if not bodyless:
                lines.append(f"Content-Length: {len(body)}")
            head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
            self.wfile.write(head + (b"" if bodyless else body[:send]))

        def _handle(self) -> None:
            body = self._read_body()
            fault = proxy._choose(self.command, self.path)
            if fault is not None and fault.kind == "reset":
                self._reset()
                return
            if fault is not None and fault.kind == "error":
                xml = (
                    '<?xml version="1.0" encoding="UTF-8"?>\n'
                    f"<Error><Code>{fault.code}</Code><Message>injected by faultproxy</Message>"
                    f"<Resource>{self.path}</Resource><RequestId>faultproxy</RequestId></Error>"
                ).encode()
                headers = [("Content-Type", "application/xml"), ("Retry-After", "0")]
                self._respond(fault.status, "Injected Fault", headers, xml)
                return
            if fault is not None and fault.kind == "delay":
                time.sleep(fault.delay)
            status, reason, headers, data = self._forward(body)
            if fault is not None and fault.kind == "drop_response":
                self._reset()
                return
            if fault is not None and fault.kind == "truncate":
                self._respond(status, reason, headers, data, send=len(data) // 2)
                self._reset()
                return
            self._respond(status, reason, headers, data)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        def finish(self) -> None:
            super().finish()
            if self.upstream is not None:
                self.upstream.close()

    return Handler
