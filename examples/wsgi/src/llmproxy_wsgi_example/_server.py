"""A threaded wsgiref server: the standard library's, one thread per request (enough for a demo and tests;
use gunicorn, waitress or uWSGI in production: the app is plain WSGI)."""

from __future__ import annotations

import logging
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from llmproxy.core import WSGIApp

logger = logging.getLogger("llmproxy_wsgi_example.access")


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a client holding a connection open does not keep the process alive


class LoggingHandler(WSGIRequestHandler):
    """Access lines to the ``llmproxy_wsgi_example.access`` logger instead of stderr."""

    def log_message(self, format: str, *args: Any) -> None:
        logger.info("%s %s", self.address_string(), format % args)


def make_threaded_server(app: WSGIApp, host: str = "127.0.0.1", port: int = 0) -> WSGIServer:
    """A server bound to ``host:port`` (0: a free port, see ``server.server_port``); ``serve_forever()``
    it, ``shutdown()`` and ``server_close()`` it."""
    return make_server(host, port, app, server_class=ThreadingWSGIServer, handler_class=LoggingHandler)
