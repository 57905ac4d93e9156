"""Authentication for llmproxy: JWT bearer tokens, hashed API keys, tenant policies, ASGI/WSGI middleware."""

from ._asgi import AuthMiddleware
from ._authenticator import Authenticator, bearer_token, single_authorization
from ._errors import (
    ApiKeyExpired,
    ApiKeyNotFound,
    ApiKeyRevoked,
    AuthenticationError,
    AuthError,
    AuthorizationError,
    AuthUnavailable,
    DuplicateAuthorization,
    InvalidApiKey,
    InvalidToken,
    MissingCredentials,
    PolicyDenied,
    TokenExpired,
)
from ._guards import PolicyGuard, WSGIPolicyGuard, add_exception_handlers, require, requires
from ._jwt import JWTSettings, JWTVerifier
from ._jwt_keys import ALGORITHM_FAMILY, KeyConfigError
from ._keys import ApiKeyOptions
from ._policies import (
    AllOf,
    AnyOf,
    ApiAccess,
    HasRole,
    HasScope,
    Policy,
    SameTenant,
    TenantAdmin,
    all_of,
    any_of,
    check,
)
from ._principal import PRINCIPAL_KEY, Principal, PrincipalKind, context_with_principal, principal_from_scope
from ._records import DEFAULT_PREFIX, EPOCH_KEY, cache_key, generate_secret, hash_secret
from ._service import DEFAULT_SCOPES, ApiKeyService, AsyncApiKeyService
from ._store import ApiKey, CreatedApiKey, api_keys_table
from ._version import __version__
from ._wsgi import AuthWSGIMiddleware

__all__ = [
    "ALGORITHM_FAMILY",
    "DEFAULT_PREFIX",
    "DEFAULT_SCOPES",
    "EPOCH_KEY",
    "PRINCIPAL_KEY",
    "AllOf",
    "AnyOf",
    "ApiAccess",
    "ApiKey",
    "ApiKeyExpired",
    "ApiKeyNotFound",
    "ApiKeyOptions",
    "ApiKeyRevoked",
    "ApiKeyService",
    "AsyncApiKeyService",
    "AuthError",
    "AuthMiddleware",
    "AuthUnavailable",
    "AuthWSGIMiddleware",
    "AuthenticationError",
    "Authenticator",
    "AuthorizationError",
    "CreatedApiKey",
    "DuplicateAuthorization",
    "HasRole",
    "HasScope",
    "InvalidApiKey",
    "InvalidToken",
    "JWTSettings",
    "JWTVerifier",
    "KeyConfigError",
    "MissingCredentials",
    "Policy",
    "PolicyDenied",
    "PolicyGuard",
    "Principal",
    "PrincipalKind",
    "SameTenant",
    "TenantAdmin",
    "TokenExpired",
    "WSGIPolicyGuard",
    "__version__",
    "add_exception_handlers",
    "all_of",
    "any_of",
    "api_keys_table",
    "bearer_token",
    "cache_key",
    "check",
    "context_with_principal",
    "generate_secret",
    "hash_secret",
    "principal_from_scope",
    "require",
    "requires",
    "single_authorization",
]
