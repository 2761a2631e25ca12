"""The command line's fixtures: the real gateway on a port the kernel picked, and the
environment the client commands read (``SATUPINTU_URL``, ``SATUPINTU_API_KEY``)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from werkzeug.serving import make_server


@pytest.fixture
def gateway_url(app, api_key, env, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """This test's gateway served over HTTP on 127.0.0.1 port 0, and the client commands
    pointed at it with a key of every scope (also in ``env``, for child processes)."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    for name, value in (("SATUPINTU_URL", url), ("SATUPINTU_API_KEY", api_key)):
        env[name] = value
        monkeypatch.setenv(name, value)
    yield url
    server.shutdown()
