"""Why a request was not let in. Each error is core's :class:`~llmproxy.core.EdgeError`: its HTTP status,
its OpenAI-style error fields and its headers (``WWW-Authenticate`` on 401 and 400, ``Retry-After`` on 503),
so core's ``send_error`` / ``wsgi_error`` answer with it as they are.

Messages are safe to show to the caller: they never contain the credential, a key or a stack trace.
"""

from __future__ import annotations

import re

from llmproxy.core import EdgeError

DEFAULT_REALM = "llmproxy"
#: What may not stand inside a quoted WWW-Authenticate parameter.
_UNSAFE = re.compile(r'[^\x20-\x7e]|["\\]')


def checked_realm(realm: str) -> str:
    """``realm``, if it can stand in ``WWW-Authenticate: Bearer realm="..."`` as it is."""
    if not isinstance(realm, str) or not realm or _UNSAFE.search(realm):
        raise ValueError(f"realm must be printable ASCII without quotes or backslashes, got {realm!r}")
    return realm


class AuthError(EdgeError):
    """Base of every error this package raises on purpose."""

    status: int = 401
    type: str = "invalid_request_error"
    code: str = "invalid_token"
    param: str | None = None
    #: RFC 6750's ``error`` in the ``WWW-Authenticate: Bearer`` challenge; None: no challenge is sent.
    challenge: str | None = "invalid_token"
    #: Seconds for ``Retry-After`` (None: no header).
    retry_after: int | None = None

    def __init__(self, message: str) -> None:
        cls = type(self)
        super().__init__(
            cls.status,
            message,
            type=cls.type,
            code=cls.code,
            param=cls.param,
            headers=self._headers(DEFAULT_REALM, message),
        )

    def _headers(self, realm: str, message: str) -> list[tuple[str, str]]:
        headers: list[tuple[str, str]] = []
        if self.challenge is not None:
            description = _UNSAFE.sub("", message)
            headers.append(
                (
                    "www-authenticate",
                    f'Bearer realm="{realm}", error="{self.challenge}", error_description="{description}"',
                )
            )
        if self.retry_after is not None:
            headers.append(("retry-after", str(self.retry_after)))
        return headers

    def for_realm(self, realm: str) -> EdgeError:
        """This refusal as a middleware of ``realm`` answers it (the realm of its ``WWW-Authenticate``)."""
        if realm == DEFAULT_REALM:
            return self
        return EdgeError(
            self.status,
            self.message,
            type=self.type,
            code=self.code,
            param=self.param,
            headers=self._headers(realm, self.message),
        )


class DuplicateAuthorization(AuthError):
    """More than one ``Authorization`` header (HTTP 400): refused rather than pick one, because a proxy in
    front may have read another one than we would. RFC 6750 calls this ``invalid_request``."""

    status = 400
    code = "duplicate_authorization"
    param = "Authorization"
    challenge = "invalid_request"


class AuthenticationError(AuthError):
    """The request carries no usable credential (HTTP 401)."""


class MissingCredentials(AuthenticationError):
    code = "missing_credentials"


class InvalidToken(AuthenticationError):
    """A JWT failed verification: signature, algorithm, issuer, audience, time window, claims."""

    code = "invalid_token"


class TokenExpired(InvalidToken):
    code = "token_expired"


class InvalidApiKey(AuthenticationError):
    """The API key is unknown, malformed, revoked or expired."""

    code = "invalid_api_key"


class ApiKeyRevoked(InvalidApiKey):
    pass


class ApiKeyExpired(InvalidApiKey):
    pass


class AuthUnavailable(AuthenticationError):
    """Credentials could not be checked (the key store or the JWKS endpoint is unreachable): HTTP 503."""

    status = 503
    type = "service_unavailable"
    code = "auth_unavailable"
    challenge = None
    retry_after = 1


class AuthorizationError(AuthError):
    """The caller is known but a policy does not allow the request (HTTP 403)."""

    status = 403
    type = "permission_error"
    code = "insufficient_permissions"
    challenge = None


class PolicyDenied(AuthorizationError):
    def __init__(self, message: str, policy: str | None = None) -> None:
        super().__init__(message)
        self.policy = policy


class ApiKeyNotFound(LookupError):
    """No API key with this id (management calls: get / revoke)."""

    def __init__(self, key_id: object) -> None:
        super().__init__(f"API key {key_id} does not exist")
        self.key_id = key_id
