"""gunicorn settings of the gateway, for running it under gunicorn directly:

    gunicorn -c gunicorn.conf.py 'gateway.api:create_app()'

(as docker-compose.yml does).  They are the settings ``satupintu serve`` applies
(gateway/http_server.py), read through the same Settings object, so both ways run the same
gateway: stock gthread workers, JSON log lines, the workers' Prometheus counters added up
through prometheus-client's multiprocess files.  Any gunicorn setting may be added here;
``GUNICORN_CMD_ARGS`` overrides them per deployment.
"""

from core.settings import Settings
from gateway.http_server import options, prepare_metrics_folder

prepare_metrics_folder()  # before any worker imports prometheus-client
globals().update(options(Settings.from_env()))
