"""Feature flags in the gateway: the flags the gateway consults, their code defaults, and where it gates.

- ``llm_gateway`` gates ``/v1/`` per tenant (403 ``feature_disabled``), evaluated by the flags middleware
  after auth, so the tenant is known.
- ``streaming`` gates ``"stream": true`` on chat completions: the middleware puts its value into
  ``RequestContext.flags`` and the handler refuses a stream (403 ``feature_disabled``, ``param: stream``)
  before it starts one, rather than breaking a stream half-way.

Both are **on by default**: until an operator stores a definition (``PUT /admin/flags/...``), every tenant
may use the API and stream, so the embedded demo works as it did before flags existed. Storing a definition
replaces the default for that flag on every process within a second.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from llmproxy.core import AsyncRedis, RequestContext
from llmproxy.flags import AsyncFlagsClient, Flag

LLM_GATEWAY = "llm_gateway"
STREAMING = "streaming"

#: Served while no definition is stored (and under the stored set for keys it lacks).
DEFAULTS = (
    Flag(key=LLM_GATEWAY, default_value=True, description="The tenant may call the /v1/ API."),
    Flag(key=STREAMING, default_value=True, description="The tenant may ask for streamed completions."),
)


def build_flags(redis: AsyncRedis, engine: AsyncEngine) -> AsyncFlagsClient:
    return AsyncFlagsClient(redis, engine, defaults=DEFAULTS)


def streaming_allowed(ctx: RequestContext | None) -> bool:
    """The ``streaming`` flag as the middleware evaluated it (on when no middleware ran: the bare app)."""
    return ctx is None or ctx.flags.get(STREAMING, True)
