"""Background tasks that stop when they are asked to, even when a library lost the request on the way."""

from __future__ import annotations

import asyncio

__all__ = ["raise_if_cancelling"]


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
