"""WSGI quota middleware: the same decisions as the ASGI one (shared in ``_http``), a WSGI adapter."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from llmproxy.core import StartResponse, WSGIApp, WSGIEnviron, context_from_environ, open_environ_usage

from ._body import BodyTooLarge, InvalidContentLength, content_length, read_until_end
from ._client import QuotaClient
from ._http import (
    STATUS_TEXT,
    Headers,
    check_estimate,
    error,
    rate_limit_headers,
    rejection,
    tokens_to_settle,
)
from ._results import InvalidQuotaRequest, UnknownTenant

logger = logging.getLogger("llmproxy.quota")

EstimateTokens = Callable[[WSGIEnviron, bytes], int]


class QuotaWSGIMiddleware:
    """The WSGI twin of :class:`~llmproxy.quota.QuotaMiddleware` (same statuses, headers and settling rules).
    Tokens are settled when the server closes the response iterable (end of body or client gone)."""

    def __init__(
        self,
        app: WSGIApp,
        *,
        client: QuotaClient,
        estimate_tokens: EstimateTokens | None = None,
        max_body_bytes: int = 8 * 1024 * 1024,
        require_tenant: bool = False,
    ) -> None:
        if max_body_bytes <= 0:
            raise ValueError("max_body_bytes must be positive")
        self.app = app
        self.client = client
        self.estimate_tokens = estimate_tokens
        self.max_body_bytes = max_body_bytes
        self.require_tenant = require_tenant

    def __call__(self, environ: WSGIEnviron, start_response: StartResponse) -> Iterable[bytes]:
        ctx = context_from_environ(environ)
        if ctx is None or ctx.tenant_id is None:
            if self.require_tenant:
                return _respond(
                    start_response,
                    *error(401, "No tenant: authenticate first.", "invalid_request_error", "missing_tenant"),
                )
            return self.app(environ, start_response)
        estimate = 0
        if self.estimate_tokens is not None:
            try:
                body = self._read_body(environ)
            except InvalidContentLength as exc:
                return _respond(
                    start_response,
                    *error(
                        400, str(exc), "invalid_request_error", "invalid_content_length", "Content-Length"
                    ),
                )
            except BodyTooLarge:
                return _respond(
                    start_response,
                    *error(
                        413,
                        f"Request body exceeds {self.max_body_bytes} bytes.",
                        "invalid_request_error",
                        "request_too_large",
                    ),
                )
            environ["wsgi.input"] = io.BytesIO(body)
            estimate = check_estimate(self.estimate_tokens(environ, body))
        usage = open_environ_usage(environ)
        try:
            admission = self.client.admit(ctx, estimate)
        except UnknownTenant as exc:
            return _respond(start_response, *error(403, str(exc), "invalid_request_error", "unknown_tenant"))
        except InvalidQuotaRequest as exc:
            return _respond(
                start_response,
                *error(400, str(exc), "invalid_request_error", "invalid_quota_request", exc.field),
            )
        now = self.client.core.wall()
        if not admission.allowed:
            return _respond(start_response, *rejection(admission, now))
        extra = rate_limit_headers(admission, now)
        status: list[int] = []

        def start_with_headers(status_line: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            status.append(int(status_line[:3]))
            return start_response(status_line, [*headers, *extra], exc_info)

        def settle(failed: bool) -> None:
            if admission.reservation is None:
                return
            tokens = tokens_to_settle(
                usage.reported, usage.total_tokens, estimate, status[-1] if status else None, failed
            )
            try:
                self.client.settle(admission.reservation, tokens)
            except Exception:
                logger.exception("quota: settling failed")

        try:
            result = self.app(environ, start_with_headers)
        except BaseException:
            settle(True)
            raise
        return _SettleOnClose(result, settle)

    def _read_body(self, environ: WSGIEnviron) -> bytes:
        """The whole body, at most ``max_body_bytes``: ``CONTENT_LENGTH`` bytes; without one, to the end of a
        terminated input (chunked), else nothing (PEP 3333: reading past an absent length may block)."""
        length = content_length(environ.get("CONTENT_LENGTH"))
        stream = environ["wsgi.input"]
        if length is None:
            terminated = environ.get("wsgi.input_terminated")
            return read_until_end(stream, self.max_body_bytes) if terminated else b""
        if length > self.max_body_bytes:
            raise BodyTooLarge
        body: bytes = stream.read(length) if length else b""
        return body


class _SettleOnClose:
    """Wraps the app's iterable; settles once, when the server closes it (PEP 3333)."""

    def __init__(self, inner: Iterable[bytes], settle: Callable[[bool], None]) -> None:
        self._inner = inner
        self._settle = settle
        self._failed = False
        self._done = False

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._inner
        except BaseException:
            self._failed = True
            raise

    def close(self) -> None:
        try:
            close = getattr(self._inner, "close", None)
            if close is not None:
                close()
        finally:
            if not self._done:
                self._done = True
                self._settle(self._failed)


def _respond(start_response: StartResponse, status: int, headers: Headers, body: bytes) -> list[bytes]:
    start_response(f"{status} {STATUS_TEXT[status]}", [*headers, ("content-length", str(len(body)))])
    return [body]
