"""gunicorn settings of the gateway, for running it under gunicorn directly:

    gunicorn -c gunicorn.conf.py 'gateway.api:create_app()'

(as docker-compose.yml does).  They are the settings ``satupintu serve`` applies, read from
the same environment variables, so both ways run the same gateway: gthread workers (threads
serve slow clients and server-sent event streams without blocking a process; see
gateway/serving.py), JSON log
lines, and the workers' Prometheus counters added up through prometheus-client's
multiprocess files.  Any gunicorn setting may be added here; ``GUNICORN_CMD_ARGS`` overrides
them per deployment.
"""

import os
import tempfile
from pathlib import Path

bind = os.environ.get("SATUPINTU_BIND", "127.0.0.1:8080")
workers = int(os.environ.get("SATUPINTU_WEB_WORKERS", "2"))
# gthread, whose threads answer a busy kept-alive connection's next request themselves
# (gateway/serving.py; SATUPINTU_KEEPALIVE_HOLD_MS, 0 = plain gthread).
from gateway.serving import worker_class as _worker_class  # noqa: E402

worker_class = _worker_class()
threads = int(os.environ.get("SATUPINTU_WEB_THREADS", "8"))
timeout = 60
graceful_timeout = 10
# Behind a load balancer that keeps connections open, outlive its idle timeout (often 60 s)
# for a little less than it, so the balancer never sends on a connection being closed.
keepalive = 55
accesslog = None
# gunicorn >= 25.1 opens a control socket at one fixed path per user (~/.gunicorn/gunicorn.ctl):
# every gateway on the machine would take it from the previous one, and remove it on exit
# while another still runs. Operators use signals (and systemd/docker) instead.
control_socket_disable = True
# The workers' heartbeat files on tmpfs: a container's overlay file system can stall them.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None

# Before any worker imports prometheus-client: where the workers' counters meet.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="satupintu-metrics-")


def on_starting(server):
    """In the master, once: JSON logs, and no counters left over from an earlier run."""
    folder = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    for leftover in folder.glob("*.db"):
        leftover.unlink()
    from core.logs import configure
    configure("gateway")


def child_exit(server, worker):
    """A worker's live gauges go with it (prometheus-client's multiprocess recipe)."""
    from prometheus_client import multiprocess
    multiprocess.mark_process_dead(worker.pid)
