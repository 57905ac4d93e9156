"""Composition: the FastAPI app (business logic) wrapped in one ASGI middleware per concern."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from llmproxy.core import ASGIApp, AsyncTenantRegistry, create_async_engine

from ._admin import router as admin_router
from ._api import ModelCatalog
from ._api import router as api_router
from ._edge import AccessLog, ErrorGuard, RequestBodyLimit
from ._errors import install_error_handlers
from ._mock import MockProvider
from ._providers import Provider
from ._settings import GatewaySettings
from ._upstream import UpstreamProvider
from ._version import __version__


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


def create_api(settings: GatewaySettings, *, provider: Provider | None = None) -> FastAPI:
    """The FastAPI app alone: OpenAI-compatible and admin routes, OpenAI-style errors; no middleware."""
    provider = provider or create_provider(settings)
    engine = create_async_engine(settings.database_url)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await provider.aclose()
            await engine.dispose()

    api = FastAPI(
        title="llmproxy gateway",
        version=__version__,
        description="An OpenAI-compatible LLM gateway composed of llmproxy middlewares.",
        lifespan=lifespan,
    )
    api.state.provider = provider
    api.state.catalog = ModelCatalog(
        chat=tuple(settings.chat_models), embedding=tuple(settings.embedding_models)
    )
    api.state.tenants = AsyncTenantRegistry(engine)
    install_error_handlers(api)
    api.include_router(api_router)
    api.include_router(admin_router)

    @api.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return api


def with_edge(app: ASGIApp, settings: GatewaySettings) -> ASGIApp:
    """What every HTTP service wants at its edge: request id + access log, error guard, body limit."""
    return AccessLog(
        ErrorGuard(RequestBodyLimit(app, max_bytes=settings.max_body_bytes)), log=settings.access_log
    )


def create_bare_app(settings: GatewaySettings | None = None) -> ASGIApp:
    """The same app without the llmproxy middlewares (the benchmark's baseline)."""
    settings = settings or GatewaySettings()
    return with_edge(create_api(settings), settings)


def create_app(settings: GatewaySettings | None = None) -> ASGIApp:
    """The full gateway: edge → auth → quota (limits from ratelimit-config) → app."""
    settings = settings or GatewaySettings()
    api = create_api(settings)
    return with_edge(api, settings)
