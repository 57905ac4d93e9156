"""Small ASGI apps the tests trace: a FastAPI app with OpenAI-shaped routes, and raw ASGI drivers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, StreamingResponse

from llmproxy.core import (
    ASGIApp,
    Message,
    Receive,
    RequestContext,
    Scope,
    Send,
    bind_context_to_scope,
    report_usage,
    reset_current_context,
)
from llmproxy.observability import add_event, annotate

TENANT = str(uuid.UUID(int=7))


def llm_app() -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(body: dict[str, Any]) -> Any:
        model = body.get("model", "gpt-4o-mini")
        annotate({"llmproxy.quota.allowed": True}, **{"llmproxy.quota.remaining": 9})
        add_event(
            "feature_flag.evaluation", {"feature_flag.key": "new-ui", "feature_flag.result.variant": "on"}
        )
        if body.get("fail"):
            raise RuntimeError("handler failed")
        chunks = int(body.get("chunks", 0))
        if not chunks:
            report_usage(model=model, input_tokens=12, output_tokens=34)
            return JSONResponse({"id": "x", "model": model})

        async def stream() -> AsyncIterator[str]:
            for index in range(chunks):
                report_usage(model=model, input_tokens=12, output_tokens=index + 1, final=index == chunks - 1)
                yield f"data: {index}\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    @app.get("/admin/tenants/{tenant_id}")
    async def tenant(tenant_id: str) -> dict[str, str]:
        return {"id": tenant_id}

    @app.get("/boom")
    async def boom() -> JSONResponse:
        return JSONResponse({"error": "down"}, status_code=503)

    return app


class Authenticated:
    """Stands in for auth: binds a context with a tenant, key, user and model, as auth's middleware would."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ctx = RequestContext(
            tenant_id=TENANT, api_key_id="key-1", user_id="user-1", request_id="req-1", model="gpt-4o"
        )
        token = bind_context_to_scope(scope, ctx)
        try:
            await self.app(scope, receive, send)
        finally:
            reset_current_context(token)


def http_scope(method: str = "POST", path: str = "/v1/chat/completions", **extra: Any) -> Scope:
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), (b"user-agent", b"pytest")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    scope.update(extra)
    return scope


async def drive(app: ASGIApp, scope: Scope, body: bytes = b"") -> list[Message]:
    """Call ``app`` once with ``body``; return what it sent."""
    sent: list[Message] = []
    delivered = False

    async def receive() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def streaming_app(chunks: int, *, usage: bool = True) -> ASGIApp:
    """A raw ASGI app sending ``chunks`` non-empty body parts (and a closing empty one)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for index in range(chunks):
            if usage:
                report_usage(model="gpt-4o-mini", input_tokens=5, output_tokens=index + 1, final=False)
            await send(
                {"type": "http.response.body", "body": f"data: {index}\n\n".encode(), "more_body": True}
            )
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app
