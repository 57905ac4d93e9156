"""The llmproxy example gateway's WSGI twin: a plain WSGI app (business logic only) wrapped in each
package's WSGI middleware, on the packages' sync clients."""

from ._api import ChatAPI, ChatRequest
from ._app import CHAT_FLAG, FLAG_DEFAULTS, Backends, WSGIGateway, compose, create_wsgi_app
from ._mock import count_tokens, mock_complete, token_estimator
from ._server import make_threaded_server
from ._settings import WSGISettings
from ._version import __version__

__all__ = [
    "CHAT_FLAG",
    "FLAG_DEFAULTS",
    "Backends",
    "ChatAPI",
    "ChatRequest",
    "WSGIGateway",
    "WSGISettings",
    "__version__",
    "compose",
    "count_tokens",
    "create_wsgi_app",
    "make_threaded_server",
    "mock_complete",
    "token_estimator",
]
