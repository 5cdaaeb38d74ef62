"""Local fakes of the Resend API and a Slack incoming webhook: real HTTP servers on 127.0.0.1.

Each fake runs a stdlib `ThreadingHTTPServer` on port 0 in a thread, records every request, and
answers from a script of canned responses (then success). Tests start and stop them.
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Recorded:
    """One request the fake received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    """A canned response."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Recorded], Reply]


class FakeServer:
    """A threaded HTTP server on 127.0.0.1 answering every request through `handle`."""

    def __init__(self, handle: Handler) -> None:
        self._handle = handle
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        fake = self

        class _RequestHandler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                recorded = Recorded(
                    method=self.command,
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=self.rfile.read(length),
                )
                with fake._lock:
                    fake.requests.append(recorded)
                    reply = fake._handle(recorded)
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            do_POST = _serve
            do_GET = _serve

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # keep test output (and captured logs) free of request lines

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _RequestHandler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def _json_reply(status: int, payload: Any, headers: dict[str, str] | None = None) -> Reply:
    return Reply(
        status,
        json.dumps(payload).encode(),
        {"content-type": "application/json", **(headers or {})},
    )


class FakeResend:
    """`POST /emails` with Resend's auth, idempotency and error shapes (INTEGRATIONS.md §1.7)."""

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.script: deque[Reply] = deque()
        self.delivered: list[dict[str, Any]] = []  # emails that would really go out
        #: Called (in the server's thread) with each email that really goes out, before the
        #: answer is sent: a test can make something happen while the sender waits.
        self.on_delivered: Callable[[dict[str, Any]], None] | None = None
        self._idempotency: dict[str, tuple[str, str]] = {}  # key -> (body hash, email id)
        self.server = FakeServer(self._handle)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def posts(self) -> list[Recorded]:
        return [r for r in self.server.requests if r.method == "POST" and r.path == "/emails"]

    def fail_next(self, status: int, name: str, message: str = "", **headers: str) -> None:
        """Answer the next request with a Resend error body."""
        body = {"statusCode": status, "name": name, "message": message or name}
        self.script.append(_json_reply(status, body, headers))

    def fail_next_raw(self, status: int, body: bytes, content_type: str = "text/html") -> None:
        """Answer the next request with a non-JSON body (a proxy's error page)."""
        self.script.append(Reply(status, body, {"content-type": content_type}))

    def _handle(self, request: Recorded) -> Reply:
        if request.method != "POST" or request.path != "/emails":
            return _json_reply(404, {"statusCode": 404, "name": "not_found", "message": "nope"})
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return _json_reply(
                401,
                {"statusCode": 401, "name": "validation_error", "message": "API key is invalid"},
            )
        if self.script:
            return self.script.popleft()
        key = request.headers.get("idempotency-key")
        digest = hashlib.sha256(request.body).hexdigest()
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
        self.script: deque[Reply] = deque()
        self.delivered: list[dict[str, Any]] = []
        #: Called (in the server's thread) with each accepted post, before Slack's `ok` is sent.
        self.on_delivered: Callable[[dict[str, Any]], None] | None = None
        self.server = FakeServer(self._handle)

    @property
    def webhook_url(self) -> str:
        return f"{self.server.url}{self.secret_path}"

    @property
    def posts(self) -> list[Recorded]:
        return list(self.server.requests)

    def fail_next(self, status: int, body: str, **headers: str) -> None:
        """Answer the next post with Slack's plain-text error."""
        self.script.append(Reply(status, body.encode(), {"content-type": "text/plain", **headers}))

    def _handle(self, request: Recorded) -> Reply:
        if request.path != self.secret_path:
            return Reply(404, b"no_service", {"content-type": "text/plain"})
        if self.script:
            return self.script.popleft()
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
