"""The WSGI example behind a real threaded wsgiref server, on embedded and real backends: each concern's
WSGI middleware does its part, the handler only answers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from opentelemetry.sdk.trace import ReadableSpan

from llmproxy.audit import LLM_REQUEST_COMPLETED, AuditStore, StoredAuditEvent, consumer_from_url
from llmproxy.core.testing import eventually
from llmproxy.flags import Flag
from llmproxy.metering import UsageReport
from llmproxy.ratelimit_config import ApiKeyLimit, GlobalLimit, TenantRateLimitConfiguration
from llmproxy_wsgi_example import CHAT_FLAG

from .conftest import Served


def error_code(response: httpx.Response) -> str | None:
    code: str | None = response.json()["error"]["code"]
    return code


# -- auth ------------------------------------------------------------------------------------------------


def test_a_request_without_a_key_is_refused_with_401(served: Served) -> None:
    response = served.client.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": []})

    assert response.status_code == 401
    assert error_code(response) == "missing_credentials"
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_a_wrong_key_is_refused_with_401(served: Served) -> None:
    response = served.client.get("/v1/models", headers={"authorization": "Bearer sk-llmp-not-a-real-key"})

    assert response.status_code == 401
    assert error_code(response) == "invalid_api_key"


def test_the_health_check_needs_no_key(served: Served) -> None:
    assert served.client.get("/healthz").json() == {"status": "ok"}


# -- the handler -----------------------------------------------------------------------------------------


def test_a_request_with_a_key_gets_a_completion_with_its_usage(served: Served) -> None:
    response = served.chat("count these four words")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"].endswith("You said: count these four words")
    # the mock counts words: 4 + 1 for the role in; the 9-word preamble + the 4 echoed out
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 13, "total_tokens": 18}
    assert response.headers["x-ratelimit-limit-requests"]


def test_the_models_are_listed(served: Served) -> None:
    response = served.client.get("/v1/models", headers=served.auth)

    assert response.status_code == 200
    assert [m["id"] for m in response.json()["data"]] == ["gpt-4o-mini", "gpt-4o"]


# -- quota -----------------------------------------------------------------------------------------------


def test_the_tenant_limit_answers_429_once_exceeded(served: Served) -> None:
    served.gateway.backends.limits.upsert(
        TenantRateLimitConfiguration(
            tenant_id=served.tenant_id,
            global_limit=GlobalLimit(
                requests_per_minute=2, requests_per_day=1000, tokens_per_minute=100_000, tokens_per_day=10**6
            ),
            api_key_limit=ApiKeyLimit(requests_per_minute=100, tokens_per_minute=100_000),
        )
    )

    statuses = [served.chat().status_code for _ in range(2)]
    refused = served.chat()

    assert statuses == [200, 200]
    assert refused.status_code == 429
    assert error_code(refused) == "rate_limit_exceeded"
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"


# -- flags -----------------------------------------------------------------------------------------------


def test_a_disabled_flag_refuses_completions_but_not_the_model_list(served: Served) -> None:
    assert served.chat().status_code == 200

    served.gateway.backends.flags.put(Flag(key=CHAT_FLAG, globally_enabled=False), updated_by="tests")
    refused = served.chat()

    assert refused.status_code == 403
    assert error_code(refused) == "feature_disabled"
    assert served.client.get("/v1/models", headers=served.auth).status_code == 200


# -- metering --------------------------------------------------------------------------------------------


def test_usage_is_recorded_in_metering(served: Served) -> None:
    replies = [served.chat("one two three").json()["usage"], served.chat("four").json()["usage"]]
    metering = served.gateway.backends.metering
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)

    def report() -> UsageReport | None:
        metering.flush()
        found = metering.get_usage(served.tenant_id, hour - timedelta(hours=1), hour + timedelta(hours=2))
        return found if found.totals.requests >= 2 else None

    totals = eventually(report).totals
    assert totals.requests == 2
    assert totals.input_tokens == sum(r["prompt_tokens"] for r in replies)
    assert totals.output_tokens == sum(r["completion_tokens"] for r in replies)


# -- audit -----------------------------------------------------------------------------------------------


def test_each_completion_publishes_an_audit_event(served: Served) -> None:
    usage = served.chat("audit me").json()["usage"]
    consumer = consumer_from_url(served.backend.redis_url, served.backend.database_url)
    store = AuditStore(served.gateway.backends.engine)

    def stored() -> list[StoredAuditEvent]:
        served.gateway.backends.audit.flush()
        consumer.drain(wait=0.05)
        return store.query(tenant_id=served.tenant_id).events

    try:
        events = eventually(stored)
    finally:
        consumer.stop()
        consumer.engine.dispose()
    assert len(events) == 1
    event = events[0]
    assert event.action == LLM_REQUEST_COMPLETED
    assert event.outcome == "success"
    assert event.actor_type == "api_key"
    assert event.metadata["total_tokens"] == usage["total_tokens"]
    assert event.metadata["path"] == "/v1/chat/completions"


# -- observability ---------------------------------------------------------------------------------------


def test_each_request_is_traced_with_its_tenant_and_usage(served: Served) -> None:
    usage = served.chat().json()["usage"]

    def finished() -> list[ReadableSpan]:
        served.gateway.telemetry.force_flush()  # the span ends when the server closes the body
        return [s for s in served.spans.get_finished_spans() if s.name == "POST /v1/chat/completions"]

    spans = eventually(finished)
    assert len(spans) == 1
    attributes = spans[0].attributes or {}
    assert attributes["llmproxy.tenant.id"] == str(served.tenant_id)
    assert attributes["http.response.status_code"] == 200
    assert attributes["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]


# -- bad input -------------------------------------------------------------------------------------------


def post_raw(served: Served, content: bytes) -> httpx.Response:
    headers = {**served.auth, "content-type": "application/json"}
    return served.client.post("/v1/chat/completions", content=content, headers=headers)


def test_a_malformed_json_body_is_a_400(served: Served) -> None:
    response = post_raw(served, b'{"model": "gpt-4o-mini", "messages": [')

    assert response.status_code == 400
    assert error_code(response) == "invalid_json"


def test_a_body_that_is_not_an_object_is_a_400(served: Served) -> None:
    response = post_raw(served, b"[1, 2]")

    assert response.status_code == 400
    assert error_code(response) == "invalid_json"


def test_a_missing_field_is_a_400_naming_it(served: Served) -> None:
    response = served.client.post("/v1/chat/completions", json={"model": "gpt-4o-mini"}, headers=served.auth)

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages"


def test_a_bad_nested_field_is_a_400_naming_it(served: Served) -> None:
    response = served.client.post(
        "/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": [{"role": "robot", "content": "hi"}]},
        headers=served.auth,
    )

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages.0.role"


def test_an_unknown_model_is_a_404(served: Served) -> None:
    response = served.chat(model="gpt-unknown")

    assert response.status_code == 404
    assert error_code(response) == "model_not_found"


def test_a_stream_request_is_a_400_naming_stream(served: Served) -> None:
    response = served.chat(stream=True)

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "stream"


def test_a_body_over_the_limit_is_a_413(served: Served) -> None:
    response = post_raw(served, b" " * (1_048_576 + 1))

    assert response.status_code == 413


def test_an_unknown_path_and_a_wrong_method_are_refused_cleanly(served: Served) -> None:
    missing = served.client.get("/v1/nothing", headers=served.auth)
    wrong = served.client.get("/v1/chat/completions", headers=served.auth)

    assert missing.status_code == 404
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "POST"


def test_bad_requests_do_not_break_the_server(served: Served) -> None:
    for content in (b"{", b"\xff\xfe", b"null", b'{"model": 1, "messages": "x"}'):
        assert post_raw(served, content).status_code == 400

    assert served.chat().status_code == 200
