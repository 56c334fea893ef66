"""A real webhook receiver: an HTTP server on 127.0.0.1 in a thread that records every POST, and
the receiver's signature check exactly as the docs give it."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

SECRET = "whsec-test-0123456789abcdef"


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


#: An answer: an HTTP status, or "slow" (hold the request until ``release`` is set, then 200).
Answer = int | str


class Receiver:
    """An HTTP server on 127.0.0.1 in a thread, recording every POST and answering each with the
    next of ``answers`` (then 200). Its port is bound from the start but listens only once
    started: until then, connections are refused. With ``tls`` it speaks HTTPS, its URL naming
    ``host`` (which the test makes resolve to 127.0.0.1)."""

    def __init__(
        self,
        answers: Sequence[Answer] = (),
        *,
        tls: ssl.SSLContext | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.answers = list(answers)
        self.tls = tls
        self.host = host
        self.requests: list[Received] = []
        self.release = threading.Event()
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self.port = int(self._socket.getsockname()[1])
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{self.host}:{self.port}/hooks/provisioner?src=test"

    def start(self) -> Receiver:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    receiver.requests.append(Received(self.path, dict(self.headers), body))
                    answer = receiver.answers.pop(0) if receiver.answers else 200
                if answer == "slow":
                    receiver.release.wait(30)
                    answer = 200
                assert isinstance(answer, int)
                self.send_response(answer)
                if 300 <= answer < 400:
                    self.send_header("Location", f"http://127.0.0.1:{receiver.port}/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", self.port), Handler, bind_and_activate=False
        )
        server.socket.close()
        server.socket = self._socket
        server.server_activate()  # listen()
        if self.tls is not None:
            server.socket = self.tls.wrap_socket(self._socket, server_side=True)
        server.daemon_threads = True
        self._server = server
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self._socket.close()

    def __enter__(self) -> Receiver:
        return self if self._server is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def verify_signature(secret: str, header: str, body: bytes, tolerance: int = 300) -> bool:
    """The receiver's check, exactly as docs/webhooks.md has it (tests/unit/test_docs.py)."""
    fields = [item.strip().split("=", 1) for item in header.split(",") if "=" in item]
    try:
        timestamp = int(next(value for name, value in fields if name == "t"))
    except (StopIteration, ValueError):
        return False
    if abs(time.time() - timestamp) > tolerance:  # a replay of an old request
        return False
    signed = f"{timestamp}.".encode() + body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    # While secrets are rotated the header carries one v1 per secret: any may match.
    return any(hmac.compare_digest(expected, value) for name, value in fields if name == "v1")
