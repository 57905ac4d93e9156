"""TEMPORARY: tiny stand-ins for the core toolkit names (issue 11) that are not on main yet.

Installed into ``llmproxy.core`` only where core lacks the name, so the suite runs against the real core as
soon as it lands; then this file goes.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from types import GeneratorType
from typing import Any

from pydantic import BaseModel, ConfigDict
from redis.exceptions import NoScriptError


class Options(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True, validate_default=True)

    @classmethod
    def build(cls, options: Any = None, overrides: Mapping[str, Any] | None = None) -> Any:
        if not overrides:
            return options if options is not None else cls()
        return cls(**{**(dict(options) if options is not None else {}), **overrides})

    def replace(self, **changes: Any) -> Any:
        return type(self)(**{**dict(self), **changes})


def run_flow(flow: Any, perform: Any) -> Any:
    if type(flow) is not GeneratorType:
        return flow
    try:
        op = next(flow)
        while True:
            try:
                result = perform(op)
            except Exception as exc:
                op = flow.throw(exc)
            else:
                op = flow.send(result)
    except StopIteration as stop:
        return stop.value


async def arun_flow(flow: Any, perform: Any) -> Any:
    if type(flow) is not GeneratorType:
        return flow
    try:
        op = next(flow)
        while True:
            try:
                result = await perform(op)
            except Exception as exc:
                op = flow.throw(exc)
            else:
                op = flow.send(result)
    except StopIteration as stop:
        return stop.value


class Script:
    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest().encode()

    def command(self, keys: Any, args: Any) -> list[Any]:
        return ["EVALSHA", self.sha, len(keys), *keys, *args]


@dataclass
class Stats:
    enqueued: int = 0
    sent: int = 0
    dropped: int = 0
    failed: int = 0
    pipelines: int = 0


_async: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_sync: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


class AsyncWriteBehind:
    def __init__(self, redis: Any, *, max_queue: int = 10_000) -> None:
        self.redis, self.max_queue, self.stats = redis, max_queue, Stats()
        self._queue: list[tuple[Any, Any, Any]] = []
        self._task: Any = None

    @classmethod
    def for_client(cls, redis: Any) -> Any:
        if redis not in _async:
            _async[redis] = cls(redis)
        return _async[redis]

    def enqueue(self, command: Any, *, script: Any = None) -> bool:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.stats.dropped += 1
            return False
        if len(self._queue) >= self.max_queue:
            self.stats.dropped += 1
            return False
        self._queue.append((command, script, None))
        self.stats.enqueued += 1
        if self._task is None:
            self._task = loop.create_task(self._send())
        return True

    async def submit(self, command: Any, *, script: Any = None) -> Any:
        future = asyncio.get_running_loop().create_future()
        self._queue.append((command, script, future))
        await self.flush()
        return await future

    async def call(self, command: Any, *, script: Any = None) -> Any:
        return await self.submit(command, script=script)

    async def flush(self) -> None:
        while self._queue:
            await self._send_batch()

    async def _send(self) -> None:
        try:
            await asyncio.sleep(0.005)
            await self.flush()
        finally:
            self._task = None

    async def _send_batch(self) -> None:
        batch, self._queue = self._queue, []
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for command, _, _ in batch:
                    pipe.execute_command(*command)
                results = await pipe.execute(raise_on_error=False)
            if any(isinstance(r, NoScriptError) for r in results):
                for _, script, _ in batch:
                    if script is not None:
                        await self.redis.script_load(script.source)
                async with self.redis.pipeline(transaction=False) as pipe:
                    for command, _, _ in batch:
                        pipe.execute_command(*command)
                    results = await pipe.execute(raise_on_error=False)
        except Exception as exc:
            self.stats.failed += sum(1 for e in batch if e[2] is None)
            for _, _, future in batch:
                if future is not None and not future.done():
                    future.set_exception(exc)
            return
        self.stats.pipelines += 1
        for (_, _, future), result in zip(batch, results, strict=True):
            if isinstance(result, Exception):
                self.stats.failed += future is None
                if future is not None:
                    future.set_exception(result)
            else:
                self.stats.sent += 1
                if future is not None:
                    future.set_result(result)

    async def aclose(self) -> None:
        await self.flush()


class WriteBehind:
    def __init__(self, redis: Any, *, max_queue: int = 10_000) -> None:
        self.redis, self.max_queue, self.stats = redis, max_queue, Stats()
        self._queue: list[tuple[Any, Any]] = []
        self._lock = threading.Lock()
        self._sending = threading.Lock()
        self._wake = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    @classmethod
    def for_client(cls, redis: Any) -> Any:
        if redis not in _sync:
            _sync[redis] = cls(redis)
        return _sync[redis]

    def enqueue(self, command: Any, *, script: Any = None) -> bool:
        with self._lock:
            if len(self._queue) >= self.max_queue:
                self.stats.dropped += 1
                return False
            self._queue.append((command, script))
            self.stats.enqueued += 1
        self._wake.set()
        return True

    def call(self, command: Any, *, script: Any = None) -> Any:
        self.flush()
        try:
            return self.redis.execute_command(*command)
        except NoScriptError:
            self.redis.script_load(script.source)
            return self.redis.execute_command(*command)

    def flush(self) -> None:
        with self._sending:
            self._flush()

    def _flush(self) -> None:
        with self._lock:
            batch, self._queue = self._queue, []
        if not batch:
            return
        try:
            pipe = self.redis.pipeline(transaction=False)
            for command, _ in batch:
                pipe.execute_command(*command)
            results = pipe.execute(raise_on_error=False)
            if any(isinstance(r, NoScriptError) for r in results):
                for _, script in batch:
                    if script is not None:
                        self.redis.script_load(script.source)
                pipe = self.redis.pipeline(transaction=False)
                for command, _ in batch:
                    pipe.execute_command(*command)
                results = pipe.execute(raise_on_error=False)
        except Exception:
            self.stats.failed += len(batch)
            return
        self.stats.pipelines += 1
        for result in results:
            if isinstance(result, Exception):
                self.stats.failed += 1
            else:
                self.stats.sent += 1

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            threading.Event().wait(0.005)
            self.flush()

    def close(self) -> None:
        self.flush()


def install() -> None:
    import llmproxy.core as core

    for name, value in {
        "Options": Options,
        "run_flow": run_flow,
        "arun_flow": arun_flow,
        "Flow": Any,
        "Script": Script,
        "AsyncWriteBehind": AsyncWriteBehind,
        "WriteBehind": WriteBehind,
    }.items():
        if not hasattr(core, name):
            setattr(core, name, value)
