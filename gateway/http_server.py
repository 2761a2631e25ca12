"""The gateway under gunicorn: its settings and hooks, one copy for both ways to start it.

``satupintu serve`` runs them through gunicorn's public ``BaseApplication``;
``gunicorn -c gunicorn.conf.py 'gateway.api:create_app()'`` (docker-compose.yml) reads the
same ``options()``.  The worker class is gunicorn's stock ``gthread``: a request holds a
thread while it is read and answered (an idle kept-alive connection does not).  Everything
that is not stock is a gunicorn config hook (the public seam): JSON logs, the workers'
Prometheus files, ``gc.freeze()`` once the app is loaded, a read timeout on the listening
sockets (a client that stops sending in the middle of a request gives its thread back),
and a ``SATUPINTU_URL=...`` line once the gateway listens, so that a gateway bound to port
0 says which port it got.  Event streams are rationed in gateway/api/events.py.
"""

from __future__ import annotations

import atexit
import functools
import gc
import os
import shutil
import socket
import struct
import sys
import tempfile
from pathlib import Path
from typing import Any

from core.settings import Settings


def options(settings: Settings) -> dict[str, Any]:
    """gunicorn's settings (and hooks) for the gateway, from ``settings``."""
    return {
        # host:port (port 0: one the kernel picks, reported by when_ready), or fd://N: a
        # socket the parent holds (``satupintu run`` keeps the gateway's port over restarts).
        "bind": [settings.bind],
        "worker_class": "gthread",
        "workers": settings.web_workers,
        "threads": settings.web_threads,
        "timeout": 60,
        "graceful_timeout": 10,
        # Behind a load balancer that keeps connections open, outlive its idle timeout
        # (often 60 s) for a little less than it, so it never sends on a closing connection.
        "keepalive": 55,
        "accesslog": None,
        # gunicorn >= 25.1 opens a control socket at one fixed path per user: every gateway
        # on the machine would take it from the previous one. Operators use signals instead.
        "control_socket_disable": True,
        # The workers' heartbeat files on tmpfs: a container's overlay file system can stall them.
        "worker_tmp_dir": "/dev/shm" if os.path.isdir("/dev/shm") else None,
        "on_starting": on_starting,
        "when_ready": when_ready,
        "post_worker_init": functools.partial(post_worker_init, read_timeout=settings.web_read_timeout),
        "child_exit": child_exit,
    }


def prepare_metrics_folder() -> None:
    """Before prometheus-client is imported: the workers' counters add up through files in
    ``PROMETHEUS_MULTIPROC_DIR`` (multiprocess mode); a folder made here goes with the master."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    folder, master = tempfile.mkdtemp(prefix="satupintu-metrics-"), os.getpid()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    atexit.register(lambda: os.getpid() == master and shutil.rmtree(folder, ignore_errors=True))


def on_starting(_server: Any) -> None:
    """In the master, once: JSON logs, and no counters left over from an earlier run."""
    folder = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    for leftover in folder.glob("*.db"):
        leftover.unlink()
    from core.logs import configure
    configure("gateway")


def when_ready(server: Any) -> None:
    """In the master, once it listens: where, on a line of its own (``SATUPINTU_URL`` is what
    the client commands read)."""
    for listener in server.LISTENERS:
        print(f"SATUPINTU_URL={listener}", file=sys.stderr, flush=True)


def post_worker_init(worker: Any, *, read_timeout: float = 0) -> None:
    """In each worker, before it accepts: the read timeout, and ``gc.freeze()``.

    gthread reads a request's head and body from a blocking socket with no time bound, so
    a client that sends a header line every few seconds (slowloris) keeps a thread for as
    long as it likes.  ``SO_RCVTIMEO`` on the listening socket is inherited by every socket
    accepted from it (Linux): a read that waits longer than ``read_timeout`` fails, gunicorn
    closes the connection and the thread is free.  It bounds each pause, not the whole
    head; the reverse proxy bounds that (docs/deployment.md).

    What the app built at start-up lives as long as the process: kept out of the
    collector's reach, a full collection no longer walks it (one took ~50 ms, every request
    of the process waiting, under ``bench submit``)."""
    if read_timeout > 0:
        seconds, fraction = divmod(read_timeout, 1)
        timeval = struct.pack("ll", int(seconds), int(fraction * 1_000_000))
        for listener in worker.sockets:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
    gc.freeze()


def child_exit(_server: Any, worker: Any) -> None:
    """A worker's live gauges go with it (prometheus-client's multiprocess recipe)."""
    from prometheus_client import multiprocess
    multiprocess.mark_process_dead(worker.pid)


def serve(settings: Settings, app: Any) -> None:
    """Run ``app`` under gunicorn with ``options(settings)`` until gunicorn stops."""
    from gunicorn.app.base import BaseApplication

    class Gateway(BaseApplication):
        def load_config(self) -> None:
            for name, value in options(settings).items():
                if name in self.cfg.settings:  # control_socket_disable: gunicorn >= 25.1 only
                    self.cfg.set(name, value)

        def load(self) -> Any:
            return app

    Gateway().run()
