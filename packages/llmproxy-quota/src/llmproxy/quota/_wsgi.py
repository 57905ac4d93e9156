"""WSGI quota middleware: the same decisions as the ASGI one (shared in ``_http``), a WSGI adapter."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable

from llmproxy.core import (
    EdgeError,
    StartResponse,
    WSGIApp,
    WSGIEnviron,
    WSGIResponseWatch,
    bind_environ_usage,
    context_from_environ,
    path_under,
    read_wsgi_body,
    reset_usage,
    wsgi_error,
)

from ._client import QuotaClient
from ._http import (
    MISSING_TENANT,
    Edge,
    check_estimate,
    cost_to_settle,
    rate_limit_headers,
    refusal,
    rejection,
    tokens_to_settle,
)
from ._results import QuotaError, TokenEstimate

logger = logging.getLogger("llmproxy.quota")


class QuotaWSGIMiddleware(Edge[WSGIApp, QuotaClient, WSGIEnviron]):
    """The WSGI twin of :class:`~llmproxy.quota.QuotaMiddleware` (same statuses, headers and settling rules).
    Tokens are settled when the server closes the response iterable (end of body or client gone)."""

    def __call__(self, environ: WSGIEnviron, start_response: StartResponse) -> Iterable[bytes]:
        if not path_under(environ.get("PATH_INFO") or "/", self.paths):
            return self.app(environ, start_response)
        ctx = context_from_environ(environ)
        if ctx is None or ctx.tenant_id is None:
            if self.require_tenant:
                return wsgi_error(start_response, MISSING_TENANT)
            return self.app(environ, start_response)
        estimate: int | TokenEstimate = 0
        if self.estimate_tokens is not None:
            try:
                body = read_wsgi_body(environ, self.max_body_bytes)
            except EdgeError as exc:
                return wsgi_error(start_response, exc)
            environ["wsgi.input"] = io.BytesIO(body)
            estimate = check_estimate(self.estimate_tokens(environ, body))
        try:
            admission = self.client.admit(ctx, estimate)
        except QuotaError as exc:
            return wsgi_error(start_response, refusal(exc))
        now = self.client.core.wall()
        if not admission.allowed:
            return wsgi_error(start_response, rejection(admission, now))
        usage, token = bind_environ_usage(environ)

        def settle(watch: WSGIResponseWatch) -> None:
            # the server closed the body (its end, or the client gone): this request is over in this thread
            reset_usage(token)
            reservation = admission.reservation
            if reservation is None:
                return
            tokens = tokens_to_settle(
                usage.reported, usage.total_tokens, estimate, watch.status, watch.failed
            )
            cost = cost_to_settle(
                reservation,
                usage.reported,
                usage.input_tokens,
                usage.output_tokens,
                watch.status,
                watch.failed,
            )
            try:
                self.client.settle(reservation, tokens, cost)
            except Exception:
                logger.exception("quota: settling failed")

        watch = WSGIResponseWatch(start_response, headers=rate_limit_headers(admission, now), on_close=settle)
        return watch.call(self.app, environ)
