"""First start: data directory, demo tenant and API key, and the banner that shows how to call the gateway."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from llmproxy.auth import AsyncApiKeyService
from llmproxy.core import (
    AsyncTenantRegistry,
    Tenant,
    TenantNotFound,
    async_redis_from_url,
    create_async_engine,
)

from ._settings import GatewaySettings

DEMO_KEY_FILE = "demo-api-key"


def prepare_data_dir(settings: GatewaySettings) -> None:
    data_dir = settings.data_dir()
    if data_dir is not None:
        data_dir.mkdir(parents=True, exist_ok=True)


async def create_tenant(settings: GatewaySettings, name: str) -> Tenant:
    engine = create_async_engine(settings.database_url, **settings.database_timeouts())
    try:
        return await AsyncTenantRegistry(engine).create(name)
    finally:
        await engine.dispose()


async def find_tenant(registry: AsyncTenantRegistry, id_or_name: str) -> Tenant:
    try:
        return await registry.get(uuid.UUID(id_or_name))
    except ValueError:
        pass
    offset = 0
    while page := await registry.list(limit=1000, offset=offset):
        for tenant in page:
            if tenant.name == id_or_name:
                return tenant
        offset += len(page)
    raise LookupError(f"no tenant with id or name {id_or_name!r}")


async def create_key(settings: GatewaySettings, tenant: str, name: str) -> str:
    """Issue an API key for the tenant (by id or name) and return its secret."""
    engine = create_async_engine(settings.database_url, **settings.database_timeouts())
    redis = async_redis_from_url(settings.redis_url)
    try:
        found = await find_tenant(AsyncTenantRegistry(engine), tenant)
        created = await AsyncApiKeyService(engine, redis).create(found.id, name)
    finally:
        await redis.aclose()
        await engine.dispose()
    return created.secret


@dataclass(frozen=True)
class Demo:
    tenant: Tenant
    api_key: str | None
    created: bool


def _demo_key_file(settings: GatewaySettings) -> Path | None:
    data_dir = settings.data_dir()
    return data_dir / DEMO_KEY_FILE if data_dir is not None else None


async def ensure_demo(settings: GatewaySettings) -> Demo:
    """The demo tenant, created (with an API key) when the database has no tenant of that name yet.

    On the embedded (SQLite) deployment the demo key is kept next to the database (mode 0600) so that the
    banner can show it on every start; elsewhere it is printed once.
    """
    engine = create_async_engine(settings.database_url, **settings.database_timeouts())
    try:
        registry = AsyncTenantRegistry(engine)
        try:
            tenant = await find_tenant(registry, settings.demo_tenant_name)
        except (LookupError, TenantNotFound):
            tenant = await registry.create(settings.demo_tenant_name)
            key = await _issue_demo_key(settings, tenant)
            return Demo(tenant, key, created=True)
    finally:
        await engine.dispose()
    key_file = _demo_key_file(settings)
    saved = key_file.read_text().strip() if key_file is not None and key_file.exists() else None
    return Demo(tenant, saved or None, created=False)


async def _issue_demo_key(settings: GatewaySettings, tenant: Tenant) -> str:
    key = await create_key(settings, str(tenant.id), "demo")
    key_file = _demo_key_file(settings)
    if key_file is not None:
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(key + "\n")
    return key


def banner(settings: GatewaySettings, demo: Demo) -> str:
    base = f"http://{'127.0.0.1' if settings.host in ('0.0.0.0', '::') else settings.host}:{settings.port}"
    model = settings.chat_models[0] if settings.chat_models else "gpt-4o-mini"
    key = demo.api_key or "<your API key: llmproxy-gateway create-key demo>"
    state = "created" if demo.created else "exists"
    return f"""
llmproxy gateway — demo tenant '{demo.tenant.name}' ({demo.tenant.id}) {state}
  API key: {key}
  Docs:    {base}/docs

  curl {base}/v1/chat/completions \\
    -H "Authorization: Bearer {key}" -H "Content-Type: application/json" \\
    -d '{{"model": "{model}", "messages": [{{"role": "user", "content": "Hello!"}}]}}'

  python -c 'from openai import OpenAI
c = OpenAI(base_url="{base}/v1", api_key="{key}")
r = c.chat.completions.create(model="{model}", messages=[{{"role": "user", "content": "Hello!"}}])
print(r.choices[0].message.content)'
"""
