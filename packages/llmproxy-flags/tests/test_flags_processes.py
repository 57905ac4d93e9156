"""Real processes: a change reaches another process within a second; a forked child keeps itself current."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from llmproxy.core.testing import Backend
from llmproxy.flags import Flag, FlagsClient

pytestmark = pytest.mark.slow


class Watcher:
    """``python -m llmproxy.flags watch`` in a process of its own, its lines read as they come."""

    def __init__(self, backend: Backend) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "llmproxy.flags", "watch", "--redis-url", backend.redis_url,
             "--database-url", backend.database_url, "--seconds", "60"],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip

    def next_line(self, timeout: float) -> dict[str, object]:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError(f"no line from the watcher within {timeout} s")
        return dict(json.loads(self.process.stdout.readline()))

    def until_version(self, version: str, timeout: float) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        while True:
            line = self.next_line(max(0.0, deadline - time.monotonic()))
            if line["version"] == version:
                return line

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(10)


@pytest.fixture
def watcher(real_backend: Backend) -> Iterator[Watcher]:
    watcher = Watcher(real_backend)
    yield watcher
    watcher.stop()


def test_a_change_reaches_another_process_within_a_second(real_backend: Backend, watcher: Watcher) -> None:
    assert watcher.next_line(30)["event"] == "ready"
    writer = FlagsClient.from_urls(real_backend.redis_url, real_backend.database_url)
    delays = []
    try:
        for i in range(5):
            written_at = time.time()
            writer.put(Flag(key="propagated", rollout_percentage=10 * (i + 1)))
            line = watcher.until_version(writer.snapshot_version, timeout=5)
            assert line["flags"] == ["propagated"]
            delays.append(float(line["at"]) - written_at)  # type: ignore[arg-type]
    finally:
        writer.close()
    assert max(delays) <= 1.0, delays


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_starts_its_own_subscriber_on_first_use(real_backend: Backend) -> None:
    client = FlagsClient.from_urls(real_backend.redis_url, real_backend.database_url)
    writer = FlagsClient.from_urls(real_backend.redis_url, real_backend.database_url)
    try:
        assert client.start().ready
        parent_thread = client._thread
        go_read, go_write = os.pipe()
        result_read, result_write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report what it sees, never return into pytest
            code = 1
            try:
                os.close(go_write)
                os.read(go_read, 1)  # the parent has written the flag by now
                seen = False
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline and not seen:
                    seen = client.is_enabled("after-fork")  # the first use starts the child's subscriber
                    time.sleep(0.02)
                own_thread = client._thread is not None and client._thread is not parent_thread
                os.write(result_write, json.dumps({"seen": seen, "own_thread": own_thread}).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(go_read)
        os.close(result_write)
        writer.put(Flag(key="after-fork", default_value=True))
        os.write(go_write, b"x")
        report = json.loads(os.read(result_read, 4096) or b"{}")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert report == {"seen": True, "own_thread": True}
        assert client._thread is parent_thread  # the parent's loader carries on
    finally:
        client.close()
        writer.close()
