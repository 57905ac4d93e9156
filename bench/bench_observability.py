"""Benchmark llmproxy-observability's middleware against the bare app and opentelemetry-instrumentation-asgi.

    .venv/bin/python bench/bench_observability.py [--quick] [--stock-exporter] [--one-process]

Every contender runs on the same SDK set-up, built by one function: a TracerProvider with a
BatchSpanProcessor and a MeterProvider with a PeriodicExportingMetricReader, both exporting over OTLP/HTTP
to a local receiver in a process of its own (so decoding costs the contenders nothing), exemplars off for
both.
Spans are exported by the exporter ``configure_telemetry`` builds, ``FastOTLPSpanExporter`` (the SDK's, with
a cheaper encoder), for every contender; ``--stock-exporter`` gives every contender the SDK's own instead. The
export thread shares the GIL with the requests, so its cost shows in its contender's figures.
The ASGI app is driven directly — a minimal scope, ``receive`` and ``send`` — so the figure is the
middleware's own cost, not a server's.

Each contender runs in a process of its own, as it would be deployed (one instrumentation per app): the
contenders take turns, one process running a block of requests while the others wait, in 20 rounds in an
order shuffled for each round, so that machine noise hits all alike. A waiting process's export threads may
still finish a batch meanwhile, on the machine's cores but not under the running contender's GIL.
(``--one-process`` drives them all in this process instead, interleaved request by request, as this bench
did until 2026-12-04: there every contender's figure also carries the others' export threads and garbage
under its own GIL — the stock contenders export 3 and 7 spans per request.) Contenders:
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
import json
import random
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


OURS = "ours (span + HTTP + GenAI + seed)"
STOCK = "stock asgi (as installed)"
LEAN = "stock asgi (no send/receive spans)"
CONTENDERS = ("bare", OURS, STOCK, LEAN)
SCENARIOS = (("chat completion (one JSON body)", 0), ("chat completion stream (5 chunks)", 5))
ROUNDS = 20


def contender(name: str, chunks: int, endpoint: str, stock_exporter: bool) -> tuple[ASGIApp, object, list]:
    """One contender's app on its own providers: ``(app, telemetry or None, providers to shut down)``."""
    app = chat_app(chunks)
    if name == "bare":
        return app, None, []
    tracer_provider, meter_provider = providers(endpoint, stock_exporter)
    owned = [tracer_provider, meter_provider]
    if name == OURS:
        telemetry = configure_telemetry(
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            set_global=False,
            logs=False,
            environ={},
        )
        return TelemetryMiddleware(app, telemetry=telemetry), telemetry, owned
    exclude = ["receive", "send"] if name == LEAN else None
    middleware = OpenTelemetryMiddleware(
        app, tracer_provider=tracer_provider, meter_provider=meter_provider, exclude_spans=exclude
    )
    return middleware, None, owned


def record_one(telemetry: object) -> Callable[[], None]:
    """One ``LlmProxyMetrics.record_request`` call of ``telemetry``'s (ours)."""
    metrics = telemetry.metrics  # type: ignore[attr-defined]
    return lambda: metrics.record_request("tenant", "gpt-4o-mini", "openai", 12, 34, 0.2, True)


def worker(name: str, chunks: int, endpoint: str, stock_exporter: bool) -> int:
    """A contender's process: runs the blocks of requests it is asked for (``run N``), answers each with
    the samples (ns) as one JSON line; ``record N`` times ``record_request`` (ours only)."""
    app, telemetry, owned = contender(name, chunks, endpoint, stock_exporter)

    async def serve() -> None:
        for _ in range(2000):  # warm up: caches, first series of each instrument (as race() does)
            await one(app)
        gc.collect()
        print("ready", flush=True)
        for line in sys.stdin:
            command, _, count = line.partition(" ")
            n = int(count)
            if command == "run":
                samples = [await one(app) for _ in range(n)]
            else:
                samples = time_record_request(record_one(telemetry), n)
            print(json.dumps(samples), flush=True)

    asyncio.run(serve())
    for provider in owned:
        provider.shutdown()  # type: ignore[attr-defined]
    return 0


class Contender:
    """A contender's worker process."""

    def __init__(self, name: str, chunks: int, endpoint: str, stock_exporter: bool) -> None:
        command = [
            sys.executable,
            __file__,
            "--worker",
            name,
            "--chunks",
            str(chunks),
            "--endpoint",
            endpoint,
        ]
        if stock_exporter:
            command.append("--stock-exporter")
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the {name!r} worker did not start")

    def ask(self, command: str) -> list[int]:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        reply = self.process.stdout.readline()
        if not reply:
            raise RuntimeError(
                f"a worker exited (status {self.process.wait()}) instead of answering {command!r}"
            )
        return list(json.loads(reply))

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=30)


def race_processes(chunks: int, n: int, endpoint: str, stock_exporter: bool) -> dict[str, list[int]]:
    """Every contender in a process of its own, taking turns in blocks (see the module's docstring)."""
    workers: dict[str, Contender] = {}
    times: dict[str, list[int]] = {name: [] for name in CONTENDERS}
    rng = random.Random(20261204)
    try:
        for name in CONTENDERS:
            workers[name] = Contender(name, chunks, endpoint, stock_exporter)
        for _ in range(ROUNDS):
            order = list(CONTENDERS)
            rng.shuffle(order)
            for name in order:
                times[name] += workers[name].ask(f"run {max(1, n // ROUNDS)}")
        if chunks == 0:
            times["record_request"] = workers[OURS].ask(f"record {n}")
    finally:
        for process in workers.values():
            try:
                process.close()
            except Exception as exc:  # one that would not stop: the others are still closed
                print(f"a worker did not stop: {exc!r}", file=sys.stderr)
                process.process.kill()
    return times


def race_one_process(chunks: int, n: int, endpoint: str, stock_exporter: bool) -> dict[str, list[int]]:
    """Every contender in this process, interleaved request by request (``--one-process``)."""
    built = {name: contender(name, chunks, endpoint, stock_exporter) for name in CONTENDERS}
    times = asyncio.run(race({name: app for name, (app, _, _) in built.items()}, n))
    if chunks == 0:
        times["record_request"] = time_record_request(record_one(built[OURS][1]), n)
    for _, _, owned in built.values():
        for provider in owned:
            provider.shutdown()  # type: ignore[attr-defined]
    return times


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
    parser.add_argument(
        "--one-process", action="store_true", help="drive every contender in this process, interleaved"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--chunks", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.chunks, args.endpoint, args.stock_exporter)
    n = 2_000 if args.quick else 20_000

    receiver = subprocess.Popen(
        [sys.executable, "-c", RECEIVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert receiver.stdout is not None
        endpoint = receiver.stdout.readline().strip()
        exporter_name = "the SDK's OTLPSpanExporter" if args.stock_exporter else "FastOTLPSpanExporter"
        layout = "all in one process, interleaved" if args.one_process else "each in a process of its own"
        print(f"span exporter (every contender): {exporter_name}; contenders: {layout}")
        race_all = race_one_process if args.one_process else race_processes
        verdicts = []
        record: list[int] = []
        for title, chunks in SCENARIOS:
            times = race_all(chunks, n, endpoint, args.stock_exporter)
            record = times.pop("record_request", record)
            added = report(f"{title}, {n} requests each", times)
            ours = added[OURS]
            cheapest_stock = min(added[STOCK], added[LEAN])
            verdicts.append(
                f"{title}: ours {ours:.1f} us added (target <= 100: {'met' if ours <= 100 else 'MISSED'}); "
                f"x{ours / cheapest_stock:.2f} of the cheapest stock configuration "
                f"({'cheaper' if ours < cheapest_stock else 'NOT cheaper'})"
            )
        p50, p99 = p(record, 0.5), p(record, 0.99)
        print(f"\nLlmProxyMetrics.record_request alone: p50 {p50:.1f} us, p99 {p99:.1f} us")
        print("\n" + "\n".join(verdicts))
    finally:
        assert receiver.stdin is not None
        receiver.stdin.close()
        receiver.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
