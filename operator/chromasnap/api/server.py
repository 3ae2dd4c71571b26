"""Serving the app with uvicorn: the tuned server config, and a background server for
tests and ``chromasnap dev``."""

from __future__ import annotations

import logging
import threading
import time
from types import FrameType
from typing import Any

from chromasnap.api.app import ChromaAPI


def uvicorn_config(app: ChromaAPI, host: str, port: int, *, log_level: str = "warning") -> Any:
    """A ``uvicorn.Config`` tuned for this app: uvloop + httptools when installed (uvicorn's
    "auto"), no access log, and a keep-alive longer than chromadb's client pool keeps idle
    connections (40 s), so the server never closes a connection the client is about to reuse.
    """
    import uvicorn

    return uvicorn.Config(
        app, host=host, port=port, loop="auto", http="auto", lifespan="on",
        access_log=False, log_level=log_level, timeout_keep_alive=75, log_config=None,
    )


log = logging.getLogger("chromasnap.api")


def draining_server(config: Any, app: ChromaAPI, drain_seconds: float) -> Any:
    """A ``uvicorn.Server`` that drains for ``drain_seconds`` on SIGTERM before it stops.

    Kubernetes sends SIGTERM while Services may still route to the pod for a
    moment, and clients hold kept-alive connections to it. Stopping at once
    resets those connections mid-request. Draining keeps answering, reports
    not-ready, and closes each connection after its response (so clients
    reconnect to another pod), then shuts down gracefully. A second signal, or
    ``drain_seconds`` of 0, stops at once.
    """
    import uvicorn

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if drain_seconds <= 0 or app.draining:
                super().handle_exit(sig, frame)
                return
            log.info("draining before shutdown", extra={"seconds": drain_seconds})
            app.start_draining()
            timer = threading.Timer(drain_seconds, super().handle_exit, (sig, frame))
            timer.daemon = True
            timer.start()

    return DrainingServer(config)


class BackgroundServer:
    """Run the app under uvicorn in a thread (tests, ``chromasnap dev``); ``port=0`` picks one.

    Use as a context manager; ``url`` is ready once ``__enter__`` returns.
    """

    def __init__(self, app: ChromaAPI, host: str = "127.0.0.1", port: int = 0,
                 start_timeout: float = 30.0) -> None:
        import uvicorn

        self.app = app
        self.host = host
        self.server = uvicorn.Server(uvicorn_config(app, host, port))
        self.start_timeout = start_timeout
        self.thread = threading.Thread(target=self._run, name="chromasnap-http", daemon=True)
        self.port = port
        self._error: BaseException | None = None

    def _run(self) -> None:
        try:
            self.server.run()
        except BaseException as e:  # reported by __enter__
            self._error = e

    @property
    def url(self) -> str:
        """``http://host:port`` of the running server."""
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + self.start_timeout
        while not self.server.started:
            if self._error is not None or not self.thread.is_alive():
                raise RuntimeError(f"HTTP server failed to start: {self._error!r}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"HTTP server not started within {self.start_timeout}s")
            self.thread.join(0.01)
        sockets = [s for srv in self.server.servers for s in srv.sockets]
        self.port = sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(self.start_timeout)
