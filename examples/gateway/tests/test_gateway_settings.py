"""One settings object: GatewaySettings holds every concern's settings, each from its LLMPROXY_* variables."""

from __future__ import annotations

import pytest

from llmproxy_gateway._settings import GatewaySettings, MeteringSettings, TelemetrySettings


def test_every_concern_is_configured_through_the_one_object(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMPROXY_METERING_FLUSH_INTERVAL", "7.5")
    monkeypatch.setenv("LLMPROXY_TELEMETRY", "false")
    monkeypatch.setenv("LLMPROXY_METRICS_PATH", "/prom")
    monkeypatch.setenv("LLMPROXY_AUDIT_MAX_DELIVERIES", "9")
    monkeypatch.setenv("LLMPROXY_AUDIT_CONSUMER", "external")
    monkeypatch.setenv("LLMPROXY_QUOTA_FAILURE_POLICY", "closed")
    monkeypatch.delenv("LLMPROXY_JWT_KEYS", raising=False)
    monkeypatch.delenv("LLMPROXY_JWT_JWKS_URL", raising=False)
    settings = GatewaySettings()
    assert settings.metering.flush_interval == 7.5
    assert settings.observability.telemetry is False
    assert settings.observability.metrics_path == "/prom"
    assert settings.audit.audit_max_deliveries == 9
    assert settings.audit.audit_consumer == "external"
    assert settings.quota_failure_policy == "closed"
    assert settings.jwt is None  # no keys, no JWKS URL: no JWT accepted


def test_the_audit_trail_uses_the_gateways_own_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMPROXY_REDIS_URL", "redis://elsewhere:6379/0")
    settings = GatewaySettings(redis_url="memory://mine", database_url="sqlite:///mine.db")
    assert (settings.audit.redis_url, settings.audit.database_url) == ("memory://mine", "sqlite:///mine.db")
    assert settings.audit.transport_url == "memory://mine"


def test_jwt_settings_when_keys_are_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMPROXY_JWT_KEYS", '{"k1": "a-shared-secret-of-at-least-32-bytes!!"}')
    monkeypatch.setenv("LLMPROXY_JWT_ALGORITHMS", '["HS256"]')
    settings = GatewaySettings()
    assert settings.jwt is not None


def test_a_test_passes_its_own_concern_settings() -> None:
    settings = GatewaySettings(
        metering=MeteringSettings(flush_in_process=False), observability=TelemetrySettings(prometheus=True)
    )
    assert settings.metering.flush_in_process is False
    assert settings.observability.prometheus is True
    with pytest.raises(ValueError, match="flush_interval"):
        GatewaySettings(metering={"flush_interval": -1})
