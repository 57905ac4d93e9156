"""Composition: the FastAPI app (business logic only) wrapped in one pure ASGI middleware per concern."""

from __future__ import annotations

import gc
import os
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from llmproxy.audit import AuditMiddleware
from llmproxy.auth import AuthMiddleware, add_exception_handlers
from llmproxy.core import ASGIApp
from llmproxy.flags import FlagsMiddleware
from llmproxy.metering import MeteringMiddleware
from llmproxy.quota import QuotaMiddleware

from ._admin import router as admin_router
from ._admin_audit import router as admin_audit_router
from ._admin_budgets import router as admin_budgets_router
from ._admin_flags import router as flags_admin_router
from ._admin_limits import router as admin_limits_router
from ._admin_usage import router as admin_usage_router
from ._api import ModelCatalog
from ._api import router as api_router
from ._audit import GatewayAudit
from ._auth import ApiCaller
from ._backends import Backends
from ._edge import AccessLog, ErrorGuard, RequestBodyLimit
from ._errors import install_error_handlers
from ._estimate import token_estimator
from ._flags import LLM_GATEWAY, STREAMING
from ._health import checks, health
from ._logging import configure_logging
from ._metering import GatewayMetering
from ._mock import MockProvider
from ._openapi import document_errors_and_auth
from ._providers import Provider
from ._settings import GatewaySettings
from ._telemetry import fastapi_native_telemetry_off, with_telemetry
from ._upstream import UpstreamProvider
from ._version import __version__

#: The OpenAI-compatible API: what quota, audit and metering apply to.
API_PATHS = ("/v1/",)
#: Reachable without credentials.
PUBLIC_PATHS = ("/healthz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json")


def create_provider(settings: GatewaySettings) -> Provider:
    if settings.provider == "mock":
        return MockProvider(chunk_delay=settings.mock_chunk_delay)
    key = settings.upstream_api_key.get_secret_value() if settings.upstream_api_key else None
    return UpstreamProvider(
        settings.upstream_base_url,
        api_key=key,
        timeout=settings.upstream_timeout,
        model_map=settings.model_map,
    )


def create_api(
    settings: GatewaySettings,
    *,
    backends: Backends | None = None,
    provider: Provider | None = None,
    metering: GatewayMetering | None = None,
    openai_api: bool = True,
) -> FastAPI:
    """The FastAPI app alone: OpenAI-compatible and admin routes, OpenAI-style errors; no middleware.

    Who may call ``/v1`` is the auth middleware's rule (``policies``); the admin routes, whose rule depends
    on the tenant in their path, declare theirs with ``require``. ``openai_api=False`` leaves ``/v1`` out
    (the admin API's own app).
    """
    backends = backends or Backends.from_settings(settings)
    provider = provider or (create_provider(settings) if openai_api else None)
    audit = GatewayAudit.from_settings(settings, backends)
    metering = metering or GatewayMetering.from_backends(backends, settings.metering)
    health_checks = checks(settings, backends, audit.transport_url)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await backends.start()
        await audit.start()
        await metering.start()
        if settings.gc_freeze:
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            if settings.gc_freeze:
                gc.unfreeze()  # an app in a longer-lived process (a test): its heap collectable again
            if provider is not None:
                await provider.aclose()
            await audit.aclose()
            await metering.aclose()
            await backends.aclose()

    api = FastAPI(
        title="llmproxy gateway" if openai_api else "llmproxy admin API",
        version=__version__,
        description="An OpenAI-compatible LLM gateway composed of llmproxy middlewares."
        if openai_api
        else "Tenants, API keys, limits, flags, prices, usage and the audit trail of llmproxy gateways.",
        lifespan=lifespan,
        **fastapi_native_telemetry_off(),
    )
    api.state.provider = provider
    api.state.backends = backends
    api.state.audit = audit
    api.state.metering = metering
    api.state.catalog = ModelCatalog(
        chat=tuple(settings.chat_models), embedding=tuple(settings.embedding_models)
    )
    install_error_handlers(api)
    add_exception_handlers(api)  # 401/403 from policies in OpenAI's shape
    if openai_api:
        api.include_router(api_router)
    api.include_router(admin_router)
    api.include_router(admin_limits_router)
    api.include_router(admin_audit_router)
    api.include_router(flags_admin_router)
    api.include_router(admin_usage_router)
    api.include_router(admin_budgets_router)
    document_errors_and_auth(api)

    @api.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        status, body = await health(health_checks)
        return JSONResponse(body, status_code=status, headers={"cache-control": "no-store"})

    return api


def with_edge(app: ASGIApp, settings: GatewaySettings) -> ASGIApp:
    """What every HTTP service wants at its edge: request id + access log, error guard, body limits."""
    limited = RequestBodyLimit(app, max_bytes=settings.max_body_bytes, max_json_depth=settings.max_json_depth)
    guarded = ErrorGuard(limited)
    return AccessLog(guarded, log=settings.access_log)


#: The middlewares ``create_app(without=...)`` (``serve --without``) can leave out; auth and quota stay.
OPTIONAL_MIDDLEWARES = frozenset({"audit", "flags", "metering", "telemetry"})


def parse_without(names: str) -> frozenset[str]:
    """``"audit, flags"`` (``serve --without``, ``LLMPROXY_GATEWAY_WITHOUT``) as names, checked."""
    without = frozenset(name.strip() for name in names.split(",") if name.strip())
    check_without(without)
    return without


def check_without(without: Collection[str]) -> None:
    """ValueError naming what :data:`OPTIONAL_MIDDLEWARES` does not hold."""
    unknown = set(without) - OPTIONAL_MIDDLEWARES
    if unknown:
        names, known = ", ".join(sorted(unknown)), ", ".join(sorted(OPTIONAL_MIDDLEWARES))
        raise ValueError(f"unknown middleware(s) {names}: choose from {known}")


def create_app(settings: GatewaySettings | None = None, *, without: Collection[str] = ()) -> ASGIApp:
    """The full gateway. Outermost first: observability → edge → auth → flags → quota (limits from
    ratelimit-config) → audit → metering → app.

    ``without`` names middlewares of :data:`OPTIONAL_MIDDLEWARES` to leave out (to measure what each costs,
    or to run without one); their admin routes stay.
    """
    check_without(without)
    settings = settings or GatewaySettings()
    backends = Backends.from_settings(settings)
    metering = GatewayMetering.from_backends(backends, settings.metering)
    api = create_api(settings, backends=backends, metering=metering)
    # Quota, audit and metering apply to the OpenAI-compatible API only: an admin raising a tenant's limit
    # must not wait for that tenant's quota.
    app: ASGIApp = api
    if "metering" not in without:
        app = MeteringMiddleware(app, client=metering.client, paths=API_PATHS)
    if "audit" not in without:
        app = AuditMiddleware(app, publisher=api.state.audit.publisher, paths=API_PATHS)
    app = QuotaMiddleware(
        app,
        client=backends.quota,
        estimate_tokens=token_estimator(settings.default_max_tokens),
        max_body_bytes=settings.max_body_bytes,
        paths=API_PATHS,
    )
    if "flags" not in without:
        # Inside auth (the tenant is known), outside quota: a refused tenant costs no quota round trip.
        app = FlagsMiddleware(app, flags=backends.flags, require={"/v1/": LLM_GATEWAY}, expose=[STREAMING])
    app = AuthMiddleware(
        app,
        authenticator=backends.authenticator,
        public_paths=PUBLIC_PATHS,
        policies={"/v1/": ApiCaller},  # the OpenAI-compatible API: keys (or tokens) with api:access
    )
    edged = with_edge(app, settings)
    return edged if "telemetry" in without else with_telemetry(edged, settings)


def create_admin_app(settings: GatewaySettings | None = None) -> ASGIApp:
    """The admin API as an app of its own (its own process in the deployment): ``/admin`` and ``/healthz``.

    The same routes, packages and settings as the gateway's admin routes, behind observability, the edge
    and auth (each route declares its policy); no ``/v1``, so no quota, flags, metering or request audit.
    The gateway's processes can be scaled or restarted without it, and it without them.
    """
    settings = settings or GatewaySettings()
    backends = Backends.from_settings(settings)
    api = create_api(settings, backends=backends, openai_api=False)
    app = AuthMiddleware(api, authenticator=backends.authenticator, public_paths=PUBLIC_PATHS)
    return with_telemetry(with_edge(app, settings), settings)


def create_app_from_environment() -> ASGIApp:
    """``create_app()`` for a server that imports a factory (``uvicorn --factory``, ``serve --workers N``):
    settings from ``LLMPROXY_*``, the middlewares to leave out from ``LLMPROXY_GATEWAY_WITHOUT``.
    """
    settings = GatewaySettings()
    configure_logging(settings.log_level, settings.log_format)  # a spawned worker starts unconfigured
    return create_app(settings, without=parse_without(os.environ.get("LLMPROXY_GATEWAY_WITHOUT", "")))


def create_bare_app(settings: GatewaySettings | None = None) -> ASGIApp:
    """The same app without the llmproxy middlewares (the benchmark's baseline)."""
    settings = settings or GatewaySettings()
    return with_edge(create_api(settings), settings)
