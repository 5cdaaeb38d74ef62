"""Real HTTP fake servers on 127.0.0.1 for the generator tests: Gemini and a team's ad service.

Each fake is a `ThreadingHTTPServer` on port 0 in a background thread. It records every request
(path, headers, JSON body), counts requests in flight (peak concurrency, as a provider would see
it) and answers from a script: queued `Reply`s first, then the fake's default behaviour.
"""

from __future__ import annotations

import base64
import io
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image


def png_bytes(width: int = 32, height: int = 24, color: str = "#cc3366") -> bytes:
    """A small real PNG."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    """Base64 text of `data`."""
    return base64.b64encode(data).decode()


@dataclass
class Reply:
    """One scripted answer.

    Attributes:
        status: HTTP status.
        body: JSON-serialisable body, or raw bytes.
        headers: Extra response headers.
        hold: An event the handler waits on before answering (a stalled provider).
    """

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    hold: threading.Event | None = None


@dataclass
class Seen:
    """A request the fake received."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


class FakeServer:
    """A threaded HTTP server on 127.0.0.1 with scripted replies and a concurrency meter."""

    def __init__(self, default: Callable[[Seen], Reply]) -> None:
        self.default = default
        self.script: list[Reply] = []
        self.seen: list[Seen] = []
        self.in_flight = 0
        self.peak_in_flight = 0
        self.latency_s = 0.0
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # keep test output clean

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body: Any = json.loads(raw) if raw else None
                except ValueError:
                    body = raw
                seen = Seen(
                    self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body
                )
                with fake._lock:
                    fake.seen.append(seen)
                    fake.in_flight += 1
                    fake.peak_in_flight = max(fake.peak_in_flight, fake.in_flight)
                    reply = fake.script.pop(0) if fake.script else None
                try:
                    reply = reply or fake.default(seen)
                    if reply.hold is not None:
                        reply.hold.wait(30)
                    elif fake.latency_s:
                        # Simulated provider latency (what makes requests overlap).
                        threading.Event().wait(fake.latency_s)
                    payload = (
                        reply.body
                        if isinstance(reply.body, bytes)
                        else json.dumps(reply.body).encode()
                    )
                    self.send_response(reply.status)
                    content_type = (
                        "application/octet-stream"
                        if isinstance(reply.body, bytes)
                        else "application/json"
                    )
                    self.send_header("content-type", content_type)
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.send_header("content-length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                finally:
                    with fake._lock:
                        fake.in_flight -= 1

            do_GET = _handle
            do_POST = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        # A short poll interval makes shutdown() return promptly at teardown.
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def url(self) -> str:
        """Base URL, e.g. `http://127.0.0.1:51234`."""
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def then(self, *replies: Reply) -> FakeServer:
        """Queue replies for the next requests."""
        with self._lock:
            self.script.extend(replies)
        return self

    def start(self) -> None:
        """Start serving in a background thread."""
        self.thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@contextmanager
def running(server: FakeServer) -> Iterator[FakeServer]:
    """Run `server` for the duration of the block."""
    server.start()
    try:
        yield server
    finally:
        server.stop()


# --- Gemini ---------------------------------------------------------------------------------

GEMINI_KEY = "AIzaFAKE-gemini-key-0123456789"


def gemini_error(code: int, status: str, message: str, details: list[Any] | None = None) -> Reply:
    """A Google API error reply."""
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details is not None:
        error["details"] = details
    return Reply(code, {"error": error})


def gemini_image_reply(image: bytes, text: str = "Here is your ad.") -> Reply:
    """A 200 with text commentary and one inline image (camelCase, as REST returns)."""
    parts = [{"text": text}, {"inlineData": {"mimeType": "image/png", "data": b64(image)}}]
    return Reply(
        200,
        {
            "candidates": [
                {"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}
            ],
            "modelVersion": "gemini-2.5-flash-image",
        },
    )


def gemini_default(key: str = GEMINI_KEY, image: bytes | None = None) -> Callable[[Seen], Reply]:
    """Behaves like generateContent: checks the key header, answers with an image."""
    result = image or png_bytes(40, 40)

    def answer(seen: Seen) -> Reply:
        if seen.method != "POST" or not seen.path.endswith(":generateContent"):
            return gemini_error(404, "NOT_FOUND", f"{seen.path} is not found for API version")
        if seen.headers.get("x-goog-api-key") != key:
            return gemini_error(
                400,
                "INVALID_ARGUMENT",
                "API key not valid. Please pass a valid API key.",
                [
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "API_KEY_INVALID",
                        "domain": "googleapis.com",
                    }
                ],
            )
        return gemini_image_reply(result)

    return answer


# --- A team's ad service --------------------------------------------------------------------

SERVICE_TOKEN = "svc-token-SECRET-abcdef"


def service_default(image: bytes | None = None) -> Callable[[Seen], Reply]:
    """Answers every authorised POST with a base64 image and echoes the headline."""
    result = image or png_bytes(30, 30, "#2255aa")

    def answer(seen: Seen) -> Reply:
        if seen.headers.get("authorization") != f"Bearer {SERVICE_TOKEN}":
            return Reply(401, {"error": {"message": "bad token"}})
        headline = seen.body["content"]["headline"] if isinstance(seen.body, dict) else ""
        return Reply(
            200, {"image": {"base64": b64(result), "mime_type": "image/png"}, "headline": headline}
        )

    return answer
