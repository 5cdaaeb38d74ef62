"""The one HTTP fake for tests: real servers on 127.0.0.1, and the providers built on them.

`FakeServer` is a stdlib `ThreadingHTTPServer` on port 0 in a background thread. It records
every request (`seen`), counts requests in flight (peak concurrency, as a provider would see
it) and answers from a script (queued `Reply`s first, `then(...)`), then its `default`
handler. On it: `FakeResend` (`POST /emails` with Resend's auth, idempotency and error shapes),
`FakeSlackWebhook` (an incoming webhook on a secret path), and the generator providers (Gemini
`generateContent`, a team's ad service). Tests start and stop them (`running(...)`).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import threading
import uuid
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
        headers: Extra response headers (a `content-type` here wins over the default one).
        hold: An event the handler waits on before answering (a stalled provider).
    """

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    hold: threading.Event | None = None


@dataclass
class Seen:
    """A request the fake received.

    Attributes:
        method: `GET`, `POST`, …
        path: The path and query.
        headers: Header names lower-cased.
        raw: The body's bytes.
    """

    method: str
    path: str
    headers: dict[str, str]
    raw: bytes = b""

    @property
    def body(self) -> Any:
        """The body as JSON when it is JSON, else its bytes (None when empty)."""
        if not self.raw:
            return None
        try:
            return json.loads(self.raw)
        except ValueError:
            return self.raw

    @property
    def json(self) -> Any:
        """The body parsed as JSON (raises ValueError when it is not)."""
        return json.loads(self.raw)


#: The name the export tests used for a received request.
Recorded = Seen
Handler = Callable[[Seen], Reply]


class FakeServer:
    """A threaded HTTP server on 127.0.0.1 with scripted replies and a concurrency meter."""

    def __init__(self, default: Handler) -> None:
        self.default = default
        self.script: list[Reply] = []
        self.seen: list[Seen] = []
        self.in_flight = 0
        self.peak_in_flight = 0
        self.latency_s = 0.0
        self._lock = threading.Lock()
        fake = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # keep test output (and captured logs) free of request lines

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                seen = Seen(
                    self.command,
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length) if length else b"",
                )
                with fake._lock:
                    fake.seen.append(seen)
                    fake.in_flight += 1
                    fake.peak_in_flight = max(fake.peak_in_flight, fake.in_flight)
                    reply = fake.script.pop(0) if fake.script else None
                answering = False
                try:
                    reply = reply or fake.default(seen)
                    if reply.hold is not None:
                        reply.hold.wait(30)
                    elif fake.latency_s:
                        # Simulated provider latency (what makes requests overlap).
                        threading.Event().wait(fake.latency_s)
                    # The request is over for the provider once it answers: counted out before
                    # the answer is written, as the client may start its next request the moment
                    # it has read it (this thread could still be between write and `finally`).
                    answering = True
                    with fake._lock:
                        fake.in_flight -= 1
                    raw = isinstance(reply.body, bytes)
                    payload = reply.body if raw else json.dumps(reply.body).encode()
                    headers = {k.lower(): v for k, v in reply.headers.items()}
                    headers.setdefault(
                        "content-type", "application/octet-stream" if raw else "application/json"
                    )
                    self.send_response(reply.status)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.send_header("content-length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except ConnectionError:
                    # The client went away (a request it timed out): nobody to answer. Left to
                    # socketserver, this printed a traceback into whatever captured stderr then.
                    self.close_connection = True
                finally:
                    if not answering:
                        with fake._lock:
                            fake.in_flight -= 1

            do_GET = _handle
            do_POST = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
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

    @property
    def requests(self) -> list[Seen]:
        """Every request received, in order."""
        return list(self.seen)

    def then(self, *replies: Reply) -> FakeServer:
        """Queue replies for the next requests."""
        with self._lock:
            self.script.extend(replies)
        return self

    def start(self) -> FakeServer:
        """Start serving in a background thread."""
        self.thread.start()
        return self

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


# --- Resend and Slack (exports) -------------------------------------------------------------


def _json_reply(status: int, payload: Any, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, payload, {"content-type": "application/json", **(headers or {})})


class FakeResend:
    """`POST /emails` with Resend's auth, idempotency and error shapes (INTEGRATIONS.md §1.7)."""

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        #: Answers for the next authorised `POST /emails` (after the auth check).
        self.script: list[Reply] = []
        self.delivered: list[dict[str, Any]] = []  # emails that would really go out
        #: Called (in the server's thread) with each email that really goes out, before the
        #: answer is sent: a test can make something happen while the sender waits.
        self.on_delivered: Callable[[dict[str, Any]], None] | None = None
        self._idempotency: dict[str, tuple[str, str]] = {}  # key -> (body hash, email id)
        self._lock = threading.Lock()
        self.server = FakeServer(self._handle)

    @property
    def url(self) -> str:
        """Base URL of the fake API."""
        return self.server.url

    @property
    def posts(self) -> list[Seen]:
        """Every `POST /emails` received."""
        return [r for r in self.server.seen if r.method == "POST" and r.path == "/emails"]

    def fail_next(self, status: int, name: str, message: str = "", **headers: str) -> None:
        """Answer the next request with a Resend error body."""
        body = {"statusCode": status, "name": name, "message": message or name}
        self.script.append(_json_reply(status, body, headers))

    def fail_next_raw(self, status: int, body: bytes, content_type: str = "text/html") -> None:
        """Answer the next request with a non-JSON body (a proxy's error page)."""
        self.script.append(Reply(status, body, {"content-type": content_type}))

    def _handle(self, request: Seen) -> Reply:
        with self._lock:  # one at a time, like the idempotency store it keeps
            return self._answer(request)

    def _answer(self, request: Seen) -> Reply:
        if request.method != "POST" or request.path != "/emails":
            return _json_reply(404, {"statusCode": 404, "name": "not_found", "message": "nope"})
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return _json_reply(
                401,
                {"statusCode": 401, "name": "validation_error", "message": "API key is invalid"},
            )
        if self.script:
            return self.script.pop(0)
        key = request.headers.get("idempotency-key")
        digest = hashlib.sha256(request.raw).hexdigest()
        if key and key in self._idempotency:
            known_digest, email_id = self._idempotency[key]
            if known_digest != digest:
                return _json_reply(
                    409,
                    {
                        "statusCode": 409,
                        "name": "invalid_idempotent_request",
                        "message": "Same idempotency key used with a different request payload.",
                    },
                )
            return _json_reply(200, {"id": email_id})
        email_id = str(uuid.uuid4())
        if key:
            self._idempotency[key] = (digest, email_id)
        self.delivered.append(request.json)
        if self.on_delivered is not None:
            self.on_delivered(request.json)
        return _json_reply(200, {"id": email_id}, {"ratelimit-limit": "2"})


class FakeSlackWebhook:
    """An incoming webhook: `200 ok` for a JSON message on its secret path, else Slack errors."""

    def __init__(self) -> None:
        self.secret_path = f"/services/T000/B000/{uuid.uuid4().hex}"
        #: Answers for the next posts to the secret path.
        self.script: list[Reply] = []
        self.delivered: list[dict[str, Any]] = []
        #: Called (in the server's thread) with each accepted post, before Slack's `ok` is sent.
        self.on_delivered: Callable[[dict[str, Any]], None] | None = None
        self._lock = threading.Lock()
        self.server = FakeServer(self._handle)

    @property
    def webhook_url(self) -> str:
        """The webhook's URL (its path is the secret)."""
        return f"{self.server.url}{self.secret_path}"

    @property
    def posts(self) -> list[Seen]:
        """Every request received."""
        return list(self.server.seen)

    def fail_next(self, status: int, body: str, **headers: str) -> None:
        """Answer the next post with Slack's plain-text error."""
        self.script.append(Reply(status, body.encode(), {"content-type": "text/plain", **headers}))

    def _handle(self, request: Seen) -> Reply:
        with self._lock:
            return self._answer(request)

    def _answer(self, request: Seen) -> Reply:
        if request.path != self.secret_path:
            return Reply(404, b"no_service", {"content-type": "text/plain"})
        if self.script:
            return self.script.pop(0)
        try:
            payload = request.json
        except ValueError:
            return Reply(400, b"invalid_payload", {"content-type": "text/plain"})
        if not payload.get("text") and not payload.get("blocks"):
            return Reply(400, b"no_text", {"content-type": "text/plain"})
        if len(payload.get("blocks", [])) > 50:
            return Reply(400, b"invalid_blocks", {"content-type": "text/plain"})
        self.delivered.append(payload)
        if self.on_delivered is not None:
            self.on_delivered(payload)
        return Reply(200, b"ok", {"content-type": "text/html"})


# --- Gemini (generators) --------------------------------------------------------------------

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
