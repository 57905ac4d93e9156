"""Why a request was not let in. Each error knows its HTTP status and OpenAI-style error fields.

Messages are safe to show to the caller: they never contain the credential, a key or a stack trace.
"""

from __future__ import annotations


class AuthError(Exception):
    """Base of every error this package raises on purpose."""

    status: int = 401
    type: str = "invalid_request_error"
    code: str = "invalid_token"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


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


class AuthorizationError(AuthError):
    """The caller is known but a policy does not allow the request (HTTP 403)."""

    status = 403
    type = "permission_error"
    code = "insufficient_permissions"


class PolicyDenied(AuthorizationError):
    def __init__(self, message: str, policy: str | None = None) -> None:
        super().__init__(message)
        self.policy = policy


class ApiKeyNotFound(LookupError):
    """No API key with this id (management calls: get / revoke)."""

    def __init__(self, key_id: object) -> None:
        super().__init__(f"API key {key_id} does not exist")
        self.key_id = key_id
