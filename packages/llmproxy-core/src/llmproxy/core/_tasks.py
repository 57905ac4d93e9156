"""Background tasks that stop when they are asked to, even when a library lost the request on the way."""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["cancel_and_wait", "raise_if_cancelling"]


def raise_if_cancelling() -> None:
    """Raise :class:`asyncio.CancelledError` when the current task has a cancellation request pending.

    A cancellation can be lost below our code: redis-py 8's asyncio client was seen returning a command's
    reply normally when the task's ``cancel()`` landed just as that reply was read (Python 3.11). The
    request stays counted in :meth:`asyncio.Task.cancelling`, but nothing raises it again, so a loop that
    only stops on ``CancelledError`` runs on while whoever cancelled it (an app's shutdown, the event
    loop's teardown in ``asyncio.run``) waits for ever. A background loop calls this once per turn.
    """
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running event loop: nothing to cancel
        return
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def cancel_and_wait(task: asyncio.Task[Any], *, within: float = 5.0) -> bool:
    """Cancel ``task`` and wait until it has ended, cancelling it again every 0.1 s (a cancellation a
    library lost is asked for anew) for up to ``within`` seconds. True when it ended; its exception, if it
    raised one, is retrieved (not re-raised)."""
    deadline = asyncio.get_running_loop().time() + within
    while not task.done():
        task.cancel()
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            return False
        await asyncio.wait({task}, timeout=min(0.1, left))
    if not task.cancelled():
        task.exception()
    return True
