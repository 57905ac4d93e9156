"""Redaction: secret keys at any depth, secret-shaped values anywhere, prompt text only when asked for."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llmproxy.audit import AuditPublisher, Redactor
from llmproxy.audit._redaction import OMITTED, REDACTED

redactor = Redactor()


@pytest.mark.parametrize(
    "key",
    ["password", "PASSWORD", "db_password", "Api-Key", "x-api-key", "apiKey", "API_KEY", "client_secret",
     "Authorization", "cookie", "Set-Cookie", "credentials", "privateKey", "private_key", "access_token",
     "refreshToken", "session_id", "upstream_api_key"],
)  # fmt: skip
def test_deny_listed_keys_are_redacted_whatever_their_case_and_separators(key: str) -> None:
    assert redactor.redact({key: "hunter2"}) == {key: REDACTED}


@pytest.mark.parametrize("key", ["max_tokens", "input_tokens", "total_tokens", "tokenizer", "name", "keys"])
def test_harmless_keys_are_kept(key: str) -> None:
    assert redactor.redact({key: 42}) == {key: 42}


def test_keys_are_redacted_at_any_depth_inside_lists_and_dicts() -> None:
    value = {"a": [{"b": {"c": [{"password": "p", "ok": 1}]}}]}
    assert redactor.redact(value) == {"a": [{"b": {"c": [{"password": REDACTED, "ok": 1}]}}]}


@pytest.mark.parametrize(
    "text",
    [
        "sk-proj-abcdefghijklmnop1234",
        "sk-llmp-0123456789abcdef0123",
        "Bearer eyJhbGciOi.eyJzdWIiOi.sig",
        "bearer abcdefgh12345678",
        "Basic dXNlcjpwYXNzd29yZA==",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N",
    ],
)
def test_secret_shaped_values_are_redacted_under_any_key(text: str) -> None:
    out = redactor.redact({"note": f"called with {text} today"})
    assert text not in json.dumps(out)
    assert out["note"].startswith("called with ")
    assert REDACTED in out["note"]


def test_a_copy_of_the_request_keeps_no_secret_and_no_prompt() -> None:
    request = {
        "method": "POST",
        "headers": {"Authorization": "Bearer sk-live-0123456789abcdef", "X-Request-Id": "r1"},
        "body": {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "my password is hunter2"}],
            "max_tokens": 10,
            "metadata": {"nested": {"api_key": "sk-0123456789abcdefgh"}},
        },
    }
    out = redactor.redact({"request": request})
    text = json.dumps(out)
    for secret in ("sk-live", "sk-0123", "hunter2", "Bearer"):
        assert secret not in text
    body = out["request"]["body"]
    assert body["messages"] == OMITTED
    assert body["max_tokens"] == 10
    assert body["model"] == "gpt-4o-mini"
    assert out["request"]["headers"]["X-Request-Id"] == "r1"


def test_prompt_text_is_kept_when_asked_for() -> None:
    keep = Redactor(include_text=True)
    assert keep.redact({"prompt": "hello"}) == {"prompt": "hello"}


def test_extra_deny_keys_and_allow_keys_are_configurable() -> None:
    custom = Redactor(extra_deny_keys=["tax_id"], allow_keys=["token"])
    assert custom.redact({"tax_id": "1", "token": "public-ish", "password": "x"}) == {
        "tax_id": REDACTED,
        "token": "public-ish",
        "password": REDACTED,
    }


def test_redaction_returns_a_copy_and_leaves_the_input_alone() -> None:
    original: dict[str, Any] = {"password": "x", "inner": {"secret": "y"}}
    redactor.redact(original)
    assert original == {"password": "x", "inner": {"secret": "y"}}


def test_the_publisher_redacts_before_the_event_leaves_the_process(redis_url: str) -> None:
    from llmproxy.core import redis_from_url

    from .conftest import unique_options

    options = unique_options()
    publisher = AuditPublisher.from_url(redis_url, options)
    publisher.publish(
        "apikey.issue",
        "api_key",
        "k1",
        new_values={"name": "ci", "secret": "sk-llmp-abcdefghijklmnop", "headers": {"Cookie": "s=1"}},
        note="token Bearer abcdefghijklmnopq",
    )
    publisher.flush()
    publisher.close()
    raw = redis_from_url(redis_url).xrange(options.stream)
    assert len(raw) == 1
    payload = raw[0][1][b"e"].decode()
    for secret in ("sk-llmp", "s=1", "abcdefghijklmnopq"):
        assert secret not in payload
    assert json.loads(payload)["new_values"]["name"] == "ci"
