"""Logs that carry their trace: ``trace_id`` / ``span_id`` on every record, and a JSON formatter.

The ids are added when a record is created (a log record factory), not when it is formatted, because a
``QueueHandler`` may format it on another thread where the request's span is not current.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

_installed = False
_install_lock = threading.Lock()
_STANDARD = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime", "taskName"}


def install_trace_context() -> None:
    """Give every log record ``trace_id`` and ``span_id`` (hex, or None outside a span). Idempotent."""
    global _installed
    with _install_lock:
        if _installed:
            return
        previous: Callable[..., logging.LogRecord] = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            context = trace.get_current_span().get_span_context()
            if context.is_valid:
                record.trace_id = format(context.trace_id, "032x")
                record.span_id = format(context.span_id, "016x")
            else:
                record.trace_id = record.span_id = None
            return record

        logging.setLogRecordFactory(factory)
        _installed = True


class JSONLogFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``message``, ``trace_id``, ``span_id``,
    the record's extra fields, and ``exc`` for an exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "trace_id": getattr(record, "trace_id", None),
            "span_id": getattr(record, "span_id", None),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in entry and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)
