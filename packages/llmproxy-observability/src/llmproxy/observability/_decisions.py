"""What auth and quota decided, for the request span, read off what every llmproxy stack already has.

Auth and quota do not depend on llmproxy-observability. What they decided is visible here without them: the
:class:`~llmproxy.core.RequestContext` auth bound (``is_authenticated``), the response status, and the
standard ``x-ratelimit-*`` headers quota adds (OpenAI's names). So every app gets the same attributes with no
glue of its own:

- ``llmproxy.auth.outcome``: ``authenticated``, ``rejected`` (401/403 to an unauthenticated caller) or
  ``anonymous``;
- ``llmproxy.quota.allowed`` (present when quota ran: it set headers, or answered 429) and
  ``llmproxy.quota.remaining_requests`` / ``remaining_tokens`` from the headers.
"""

from __future__ import annotations

from collections.abc import Sequence

from llmproxy.core import RequestContext

from . import _semconv as sc

#: The headers read into attributes (the others only tell that quota ran).
_REMAINING = {
    "x-ratelimit-remaining-requests": sc.LLMPROXY_QUOTA_REMAINING_REQUESTS,
    "x-ratelimit-remaining-tokens": sc.LLMPROXY_QUOTA_REMAINING_TOKENS,
}


def decisions(
    ctx: RequestContext | None,
    status: int,
    headers: Sequence[tuple[bytes, bytes]] | Sequence[tuple[str, str]],
) -> dict[str, str | int | bool]:
    """The span attributes for a response of ``status`` with ``headers`` (ASGI bytes or WSGI str pairs)."""
    authenticated = ctx is not None and ctx.is_authenticated
    if authenticated:
        outcome = "authenticated"
    elif status in (401, 403):
        outcome = "rejected"
    else:
        outcome = "anonymous"
    attributes: dict[str, str | int | bool] = {sc.LLMPROXY_AUTH_OUTCOME: outcome}
    quota = False
    for raw_name, raw_value in headers:
        name = (raw_name.decode("latin-1") if isinstance(raw_name, bytes) else raw_name).lower()
        if not name.startswith("x-ratelimit-"):
            continue
        quota = True
        key = _REMAINING.get(name)
        if key is not None:
            value = raw_value.decode("latin-1") if isinstance(raw_value, bytes) else raw_value
            if value.isdigit():
                attributes[key] = int(value)
    if quota or status == 429:
        attributes[sc.LLMPROXY_QUOTA_ALLOWED] = status != 429
    return attributes
