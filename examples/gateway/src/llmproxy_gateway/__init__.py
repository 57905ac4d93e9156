"""The llmproxy reference gateway: an OpenAI-compatible API composed of llmproxy middlewares."""

from ._app import (
    OPTIONAL_MIDDLEWARES,
    create_admin_app,
    create_api,
    create_app,
    create_app_from_environment,
    create_bare_app,
    create_provider,
)
from ._mock import MockProvider
from ._providers import GatewayError, Provider, ProviderError
from ._settings import GatewaySettings
from ._upstream import UpstreamProvider
from ._version import __version__

__all__ = [
    "OPTIONAL_MIDDLEWARES",
    "GatewayError",
    "GatewaySettings",
    "MockProvider",
    "Provider",
    "ProviderError",
    "UpstreamProvider",
    "__version__",
    "create_admin_app",
    "create_api",
    "create_app",
    "create_app_from_environment",
    "create_bare_app",
    "create_provider",
]
