"""Run a WSGI app (or an already built server) on a real loopback socket for a test or benchmark."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from socketserver import BaseServer

from flask import Flask

from otelstats.web import make_wsgi_server


@contextmanager
def running(server: BaseServer) -> Iterator[str]:
    """Serve `server` from a thread; yields its base URL, and stops and closes it afterwards."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


@contextmanager
def serving(app: Flask) -> Iterator[str]:
    """`app` on otelstats' own threaded server (what `otelstats serve` runs) on a free port."""
    with running(make_wsgi_server(app, "127.0.0.1", 0)) as url:
        yield url
