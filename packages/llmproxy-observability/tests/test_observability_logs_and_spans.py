"""JSON logs carrying trace_id / span_id, the OTel logs bridge, and spans for worker loops."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from observability_recorded import Recorded
from opentelemetry.trace import StatusCode

from llmproxy.observability import JSONLogFormatter, span, traced


def format_inside(recorded: Recorded, message: str) -> tuple[dict[str, object], int, int]:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    log = logging.getLogger("json-test")
    log.propagate = False
    log.addHandler(Keep())
    with recorded.telemetry.tracer.start_as_current_span("work") as current:
        log.warning(message, extra={"tenant_id": "t1"})
    context = current.get_span_context()
    return json.loads(JSONLogFormatter().format(records[0])), context.trace_id, context.span_id


def test_a_json_log_line_names_its_trace_and_span(recorded: Recorded) -> None:
    line, trace_id, span_id = format_inside(recorded, "hello")
    assert line["trace_id"] == format(trace_id, "032x")
    assert line["span_id"] == format(span_id, "016x")
    assert (line["message"], line["level"], line["tenant_id"]) == ("hello", "warning", "t1")


def test_a_log_outside_any_span_has_no_trace(recorded: Recorded) -> None:
    record = logging.getLogger("json-test").makeRecord("json-test", logging.INFO, __file__, 1, "x", (), None)
    line = json.loads(JSONLogFormatter().format(record))
    assert line["trace_id"] is None
    assert line["span_id"] is None


def test_the_logs_bridge_sends_records_with_their_trace(recorded: Recorded) -> None:
    log = logging.getLogger("bridge-test")
    log.setLevel(logging.INFO)
    with recorded.telemetry.tracer.start_as_current_span("work") as current:
        log.info("bridged")
    recorded.telemetry.force_flush()
    [record] = [r for r in recorded.logs_exporter.get_finished_logs() if r.log_record.body == "bridged"]
    assert record.log_record.trace_id == current.get_span_context().trace_id


def test_shutdown_removes_the_logs_bridge(recorded: Recorded) -> None:
    handlers = len(logging.getLogger().handlers)
    recorded.telemetry.shutdown()
    assert len(logging.getLogger().handlers) == handlers - 1


def test_span_wraps_a_block_and_records_what_escapes(recorded: Recorded) -> None:
    tracer = recorded.telemetry.tracer
    with span("job.ok", attributes={"job.id": 1}, tracer=tracer):
        pass
    with pytest.raises(TimeoutError), span("job.failed", tracer=tracer):
        raise TimeoutError
    ok, failed = recorded.spans()
    assert (ok.name, dict(ok.attributes or {})) == ("job.ok", {"job.id": 1})
    assert failed.status.status_code is StatusCode.ERROR
    assert (failed.attributes or {})["error.type"] == "TimeoutError"


def test_traced_runs_each_call_of_sync_and_async_functions_in_a_span(recorded: Recorded) -> None:
    tracer = recorded.telemetry.tracer

    @traced(tracer=tracer)
    def handle(item: int) -> int:
        return item * 2

    @traced(name="consume", tracer=tracer)
    async def consume(item: int) -> int:
        await asyncio.sleep(0)
        return item + 1

    assert handle(2) == 4
    assert asyncio.run(consume(2)) == 3
    names = [s.name for s in recorded.spans()]
    assert names == [handle.__wrapped__.__qualname__, "consume"]  # type: ignore[attr-defined]
