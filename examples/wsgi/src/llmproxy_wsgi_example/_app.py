"""Composition: the plain WSGI app wrapped in one WSGI middleware per concern, on sync clients."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine

from llmproxy.audit import AuditPublisher, WSGIAuditMiddleware
from llmproxy.auth import ApiAccess, ApiKeyService, Authenticator, AuthWSGIMiddleware
from llmproxy.core import (
    StartResponse,
    SyncRedis,
    TenantRegistry,
    WSGIApp,
    WSGIEnviron,
    create_engine,
    fail_fast_redis_options,
    redis_from_url,
)
from llmproxy.flags import Flag, FlagsClient, FlagsWSGIMiddleware
from llmproxy.metering import MeteringClient, WSGIMeteringMiddleware
from llmproxy.observability import Telemetry, TelemetryWSGIMiddleware, configure_telemetry, get_telemetry
from llmproxy.quota import QuotaClient, QuotaWSGIMiddleware
from llmproxy.ratelimit_config import RateLimitConfigService

from ._api import ChatAPI
from ._mock import token_estimator
from ._settings import WSGISettings

logger = logging.getLogger("llmproxy_wsgi_example")

#: Gates ``/v1/chat/`` (403 ``feature_disabled`` when off); ``/v1/models`` stays available.
CHAT_FLAG = "chat_completions"
#: Served until an operator stores a definition: on, so the embedded demo works out of the box.
FLAG_DEFAULTS = (Flag(key=CHAT_FLAG, default_value=True, description="The tenant may create completions."),)
PUBLIC_PATHS = ("/healthz",)


@dataclass
class Backends:
    """The sync clients every middleware uses, on one Redis client and one SQL engine."""

    redis: SyncRedis
    engine: Engine
    tenants: TenantRegistry
    limits: RateLimitConfigService
    quota: QuotaClient
    api_keys: ApiKeyService
    authenticator: Authenticator
    flags: FlagsClient
    metering: MeteringClient
    audit: AuditPublisher

    @classmethod
    def from_settings(cls, settings: WSGISettings) -> Backends:
        redis = redis_from_url(settings.redis_url, **fail_fast_redis_options(settings.redis_url))
        engine = create_engine(settings.database_url)
        limits = RateLimitConfigService(redis, engine)
        api_keys = ApiKeyService(engine, redis)
        return cls(
            redis=redis,
            engine=engine,
            tenants=TenantRegistry(engine),
            limits=limits,
            quota=QuotaClient(redis, limits, failure_policy=settings.quota_failure_policy),
            api_keys=api_keys,
            authenticator=Authenticator(api_keys=api_keys),
            flags=FlagsClient(redis, engine, defaults=FLAG_DEFAULTS),
            metering=MeteringClient(redis, engine=engine),
            # Over the same client: events leave in the write-behind quota's settles and usage share.
            audit=AuditPublisher.on_redis(redis),
        )

    def start(self) -> None:
        self.limits.start(wait=1.0)  # limit changes reach this process within a second
        self.flags.start()  # at most 2 s; then the last good snapshot or the defaults
        try:
            self.metering.start()  # price overrides, before the first request is priced
        except Exception as exc:  # a database down at start must not keep the app down
            logger.warning("price overrides not loaded at start: %s: %s", type(exc).__name__, exc)

    def close(self) -> None:
        self.flags.close()
        self.api_keys.close()
        self.limits.close()
        self.metering.close()
        self.audit.close()
        self.quota.close()  # sends what is still queued on the shared write-behind, closes Redis
        self.engine.dispose()


class WSGIGateway:
    """The composed app: call it as any WSGI app; :meth:`close` the clients it owns at shutdown."""

    def __init__(self, app: WSGIApp, backends: Backends, telemetry: Telemetry) -> None:
        self.app = app
        self.backends = backends
        self.telemetry = telemetry

    def __call__(self, environ: WSGIEnviron, start_response: StartResponse) -> Iterable[bytes]:
        return self.app(environ, start_response)

    def close(self) -> None:
        self.backends.close()

    def __enter__(self) -> WSGIGateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def compose(api: WSGIApp, backends: Backends, telemetry: Telemetry, settings: WSGISettings) -> WSGIApp:
    """Outermost first: observability → auth → flags → quota (limits from ratelimit-config) → audit →
    metering → app, each the package's own WSGI middleware."""
    app: WSGIApp = WSGIMeteringMiddleware(api, client=backends.metering, provider="mock")
    app = WSGIAuditMiddleware(app, publisher=backends.audit)  # llm_request_completed per /v1/ request
    app = QuotaWSGIMiddleware(
        app,
        client=backends.quota,
        estimate_tokens=token_estimator(settings.default_max_tokens),
        max_body_bytes=settings.max_body_bytes,
    )
    app = FlagsWSGIMiddleware(app, flags=backends.flags, require={"/v1/chat/": CHAT_FLAG})
    app = AuthWSGIMiddleware(
        app, authenticator=backends.authenticator, public_paths=PUBLIC_PATHS, policies={"/v1/": ApiAccess()}
    )
    return TelemetryWSGIMiddleware(app, telemetry=telemetry, excluded_paths=PUBLIC_PATHS)


def create_wsgi_app(
    settings: WSGISettings | None = None,
    *,
    redis_url: str | None = None,
    database_url: str | None = None,
    telemetry: Telemetry | None = None,
    start: bool = True,
) -> WSGIGateway:
    """The whole example, ready to serve. ``settings`` default to the environment (``LLMPROXY_*``);
    ``redis_url`` / ``database_url`` override theirs. ``telemetry`` defaults to the process-wide one,
    configured here if nothing configured it. The database must be migrated (``llmproxy migrate``, or the
    CLI's ``migrate``)."""
    overrides: dict[str, Any] = {}
    if redis_url is not None:
        overrides["redis_url"] = redis_url
    if database_url is not None:
        overrides["database_url"] = database_url
    if settings is None:
        settings = WSGISettings(**overrides)
    elif overrides:
        settings = WSGISettings(**{**settings.model_dump(), **overrides})
    telemetry = telemetry or get_telemetry() or configure_telemetry(service_name=settings.service_name)
    backends = Backends.from_settings(settings)
    api = ChatAPI(
        models=settings.models,
        default_max_tokens=settings.default_max_tokens,
        max_body_bytes=settings.max_body_bytes,
    )
    gateway = WSGIGateway(compose(api, backends, telemetry, settings), backends, telemetry)
    if start:
        backends.start()
    return gateway
