"""The README's first command: ``llmproxy-gateway serve`` in a clean directory, nothing configured."""

from __future__ import annotations

import re
from pathlib import Path

import openai

from .conftest import start_gateway

KEY_LINE = re.compile(r"API key: (sk-llmp-\S+)")


def test_serve_in_a_clean_directory_creates_a_demo_tenant_and_prints_a_working_key(tmp_path: Path) -> None:
    gateway = start_gateway(tmp_path, redis_url=None, database_url=None, name="first", demo="true")
    try:
        printed = KEY_LINE.search(gateway.stdout_path.read_text())
        assert printed is not None, gateway.logs()
        assert (tmp_path / ".llmproxy" / "llmproxy.db").exists()
        assert "curl http://127.0.0.1:" in gateway.stdout_path.read_text()
        with openai.OpenAI(
            base_url=f"{gateway.base_url}/v1", api_key=printed.group(1), max_retries=0
        ) as client:
            reply = client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello!"}]
            )
        assert reply.choices[0].message.content is not None
        assert reply.choices[0].message.content.endswith("You said: Hello!")
    finally:
        gateway.stop()


def test_a_second_start_reuses_the_demo_tenant_and_shows_the_same_key(tmp_path: Path) -> None:
    first = start_gateway(tmp_path, redis_url=None, database_url=None, name="first", demo="true")
    first.stop()
    second = start_gateway(tmp_path, redis_url=None, database_url=None, name="second", demo="true")
    try:
        first_key = KEY_LINE.search(first.stdout_path.read_text())
        second_key = KEY_LINE.search(second.stdout_path.read_text())
        assert first_key is not None
        assert second_key is not None
        assert second_key.group(1) == first_key.group(1)
        assert "exists" in second.stdout_path.read_text()
        with openai.OpenAI(base_url=f"{second.base_url}/v1", api_key=second_key.group(1), max_retries=0) as c:
            assert [m.id for m in c.models.list()]
    finally:
        second.stop()
