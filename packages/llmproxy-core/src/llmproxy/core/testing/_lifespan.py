"""Run an ASGI application's lifespan around a test that calls it in-process (``httpx.ASGITransport``
does not): what the app starts on startup is stopped on shutdown, inside the test's own event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from .._types import ASGIApp

__all__ = ["lifespan"]


@asynccontextmanager
async def lifespan(app: ASGIApp, *, within: float = 30.0) -> AsyncIterator[ASGIApp]:
    """``async with lifespan(app):`` sends ``lifespan.startup`` before the block and ``lifespan.shutdown``
    after it, through every middleware in front of the app. A failed startup or shutdown raises
    ``RuntimeError`` with the app's message; an app that does not answer a phase ``within`` seconds raises
    ``TimeoutError``."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def receive() -> dict[str, Any]:
        return await inbox.get()

    async def send(message: dict[str, Any]) -> None:
        await outbox.put(message)

    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
    task: asyncio.Task[None] = asyncio.get_running_loop().create_task(app(scope, receive, send))  # type: ignore[arg-type]

    async def answer(phase: str) -> None:
        await inbox.put({"type": f"lifespan.{phase}"})
        getter = asyncio.ensure_future(outbox.get())
        done, _ = await asyncio.wait({getter, task}, timeout=within, return_when=asyncio.FIRST_COMPLETED)
        if getter not in done:
            getter.cancel()
            if task in done:
                task.result()  # the app's own exception, if it raised one
                raise RuntimeError(f"the app returned during lifespan.{phase} without answering it")
            raise TimeoutError(f"the app did not answer lifespan.{phase} within {within} s")
        message = getter.result()
        if message["type"] != f"lifespan.{phase}.complete":
            raise RuntimeError(f"lifespan.{phase} failed: {message.get('message', '')}")

    try:
        await answer("startup")
    except BaseException:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise
    try:
        yield app
    finally:
        await answer("shutdown")
        await asyncio.wait_for(task, within)
