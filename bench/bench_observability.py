"""Benchmark llmproxy-observability's middleware against the bare app and opentelemetry-instrumentation-asgi.

    .venv/bin/python bench/bench_observability.py [--quick]

Every contender runs on the same SDK set-up, built by one function: a TracerProvider with a
BatchSpanProcessor and a MeterProvider with a PeriodicExportingMetricReader, both exporting over OTLP/HTTP
to a local receiver in a process of its own (so decoding costs this process nothing), exemplars off for both.
Spans are exported by the exporter ``configure_telemetry`` builds, ``FastOTLPSpanExporter`` (the SDK's, with
a cheaper encoder), for every contender; ``--stock-exporter`` gives every contender the SDK's own instead. The
export thread shares the GIL with the requests, so its cost shows in every contender's figures.
The ASGI app is driven directly — a minimal scope, ``receive`` and ``send`` — so the figure is the
middleware's own cost, not a server's. Requests are interleaved contender by contender so that machine
noise hits all alike. Contenders:
- bare: the app alone (a chat completion that reports usage; and a 5-chunk stream);
- ours: ``TelemetryMiddleware`` (SERVER span, HTTP metrics, GenAI metrics, the seed's llmproxy.* metrics);
- stock: ``OpenTelemetryMiddleware`` as installed (SERVER span + an INTERNAL span per send/receive, HTTP
  metrics), and stock with ``exclude_spans=["receive", "send"]`` (its cheapest configuration).
Targets (issue 15): ours <= 100 us p50 added, and cheaper than stock while recording the GenAI metrics too.
Also: ``LlmProxyMetrics.record_request`` alone.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import subprocess
import sys
import time
from collections.abc import Callable

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from llmproxy.core import ASGIApp, Message, Receive, Scope, Send, report_usage
from llmproxy.observability import FastOTLPSpanExporter, TelemetryMiddleware, configure_telemetry

RECEIVER = """
import sys, time
from llmproxy.observability.testing import OTLPReceiver
with OTLPReceiver() as receiver:
    print(receiver.endpoint, flush=True)
    sys.stdin.read()
"""


def providers(endpoint: str, stock_exporter: bool = False) -> tuple[TracerProvider, MeterProvider]:
    resource = Resource.create({"service.name": "bench"})
    tracer_provider = TracerProvider(resource=resource)
    exporter_class = OTLPSpanExporter if stock_exporter else FastOTLPSpanExporter
    exporter = exporter_class(endpoint=f"{endpoint}/v1/traces")
    tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=f"{endpoint}/v1/metrics"), export_interval_millis=5_000
    )
    meter_provider = MeterProvider(
        resource=resource, metric_readers=[reader], exemplar_filter=AlwaysOffExemplarFilter()
    )
    return tracer_provider, meter_provider


def chat_app(chunks: int) -> ASGIApp:
    body = b'{"id":"chatcmpl-1","object":"chat.completion","choices":[],"usage":{}}'
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        report_usage(model="gpt-4o-mini", input_tokens=12, output_tokens=34)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if chunks:
            for _ in range(chunks):
                await send({"type": "http.response.body", "body": b"data: {}\n\n", "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        else:
            await send({"type": "http.response.body", "body": body})

    return app


SCOPE: Scope = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "POST",
    "scheme": "http",
    "path": "/v1/chat/completions",
    "raw_path": b"/v1/chat/completions",
    "root_path": "",
    "query_string": b"",
    "headers": [
        (b"host", b"127.0.0.1:8000"),
        (b"user-agent", b"OpenAI/Python 1.50.0"),
        (b"content-type", b"application/json"),
        (b"authorization", b"Bearer sk-test"),
        (b"traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    ],
    "client": ("127.0.0.1", 50000),
    "server": ("127.0.0.1", 8000),
}
REQUEST: Message = {
    "type": "http.request",
    "body": b'{"model":"gpt-4o-mini","messages":[]}',
    "more_body": False,
}


async def receive() -> Message:
    return REQUEST


async def send(message: Message) -> None:
    pass


async def one(app: ASGIApp) -> int:
    scope = dict(SCOPE)
    started = time.perf_counter_ns()
    await app(scope, receive, send)
    return time.perf_counter_ns() - started


def p(samples: list[int], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] / 1000


async def race(contenders: dict[str, ASGIApp], n: int) -> dict[str, list[int]]:
    times: dict[str, list[int]] = {name: [] for name in contenders}
    apps = list(contenders.items())
    for _ in range(max(200, n // 10)):  # warm up: caches, first series of each instrument
        for _, app in apps:
            await one(app)
    gc.collect()
    for index in range(n):
        for offset in range(len(apps)):  # rotate the order so no contender always runs first
            name, app = apps[(index + offset) % len(apps)]
            times[name].append(await one(app))
    return times


def report(title: str, times: dict[str, list[int]]) -> dict[str, float]:
    bare = p(times["bare"], 0.5)
    print(f"\n{title}")
    print(f"{'contender':<34} {'p50 us':>9} {'p99 us':>9} {'added p50':>10}")
    added: dict[str, float] = {}
    for name, samples in times.items():
        p50 = p(samples, 0.5)
        added[name] = p50 - bare
        extra = "" if name == "bare" else f"{p50 - bare:>10.1f}"
        print(f"{name:<34} {p50:>9.1f} {p(samples, 0.99):>9.1f} {extra}")
    return added


def time_record_request(record: Callable[[], None], n: int) -> list[int]:
    for _ in range(500):
        record()
    samples = []
    for _ in range(n):
        started = time.perf_counter_ns()
        record()
        samples.append(time.perf_counter_ns() - started)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument(
        "--stock-exporter",
        action="store_true",
        help="every contender exports spans with the SDK's own OTLPSpanExporter",
    )
    args = parser.parse_args()
    n = 2_000 if args.quick else 20_000

    receiver = subprocess.Popen(
        [sys.executable, "-c", RECEIVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert receiver.stdout is not None
        endpoint = receiver.stdout.readline().strip()
        ours_tp, ours_mp = providers(endpoint, args.stock_exporter)
        telemetry = configure_telemetry(
            tracer_provider=ours_tp, meter_provider=ours_mp, set_global=False, logs=False, environ={}
        )
        stock_tp, stock_mp = providers(endpoint, args.stock_exporter)
        lean_tp, lean_mp = providers(endpoint, args.stock_exporter)
        verdicts = []
        exporter_name = "the SDK's OTLPSpanExporter" if args.stock_exporter else "FastOTLPSpanExporter"
        print(f"span exporter (every contender): {exporter_name}")
        for title, chunks in (
            ("chat completion (one JSON body)", 0),
            ("chat completion stream (5 chunks)", 5),
        ):
            app = chat_app(chunks)
            contenders: dict[str, ASGIApp] = {
                "bare": app,
                "ours (span + HTTP + GenAI + seed)": TelemetryMiddleware(app, telemetry=telemetry),
                "stock asgi (as installed)": OpenTelemetryMiddleware(
                    app, tracer_provider=stock_tp, meter_provider=stock_mp
                ),
                "stock asgi (no send/receive spans)": OpenTelemetryMiddleware(
                    app, tracer_provider=lean_tp, meter_provider=lean_mp, exclude_spans=["receive", "send"]
                ),
            }
            added = report(f"{title}, {n} requests each", asyncio.run(race(contenders, n)))
            ours = added["ours (span + HTTP + GenAI + seed)"]
            cheapest_stock = min(
                added["stock asgi (as installed)"], added["stock asgi (no send/receive spans)"]
            )
            verdicts.append(
                f"{title}: ours {ours:.1f} us added (target <= 100: {'met' if ours <= 100 else 'MISSED'}); "
                f"x{ours / cheapest_stock:.2f} of the cheapest stock configuration "
                f"({'cheaper' if ours < cheapest_stock else 'NOT cheaper'})"
            )

        metrics = telemetry.metrics
        samples = time_record_request(
            lambda: metrics.record_request("tenant", "gpt-4o-mini", "openai", 12, 34, 0.2, True), n
        )
        p50, p99 = p(samples, 0.5), p(samples, 0.99)
        print(f"\nLlmProxyMetrics.record_request alone: p50 {p50:.1f} us, p99 {p99:.1f} us")
        print("\n" + "\n".join(verdicts))
        for provider in (ours_tp, ours_mp, stock_tp, stock_mp, lean_tp, lean_mp):
            provider.shutdown()
    finally:
        assert receiver.stdin is not None
        receiver.stdin.close()
        receiver.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
