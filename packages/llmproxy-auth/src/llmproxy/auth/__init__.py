"""Authentication for llmproxy: JWT bearer tokens, hashed API keys, tenant policies, ASGI/WSGI middleware."""

from ._errors import (
    ApiKeyExpired,
    ApiKeyNotFound,
    ApiKeyRevoked,
    AuthenticationError,
    AuthError,
    AuthorizationError,
    AuthUnavailable,
    InvalidApiKey,
    InvalidToken,
    MissingCredentials,
    PolicyDenied,
    TokenExpired,
)
from ._keys import DEFAULT_PREFIX, EPOCH_KEY, cache_key, generate_secret, hash_secret
from ._principal import Principal, PrincipalKind, context_with_principal
from ._service import DEFAULT_SCOPES, ApiKeyService, AsyncApiKeyService
from ._store import ApiKey, CreatedApiKey, api_keys_table
from ._version import __version__

__all__ = [
    "DEFAULT_PREFIX",
    "DEFAULT_SCOPES",
    "EPOCH_KEY",
    "ApiKey",
    "ApiKeyExpired",
    "ApiKeyNotFound",
    "ApiKeyRevoked",
    "ApiKeyService",
    "AsyncApiKeyService",
    "AuthError",
    "AuthUnavailable",
    "AuthenticationError",
    "AuthorizationError",
    "CreatedApiKey",
    "InvalidApiKey",
    "InvalidToken",
    "MissingCredentials",
    "PolicyDenied",
    "Principal",
    "PrincipalKind",
    "TokenExpired",
    "__version__",
    "api_keys_table",
    "cache_key",
    "context_with_principal",
    "generate_secret",
    "hash_secret",
]
