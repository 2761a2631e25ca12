"""gunicorn settings of the gateway, for running it under gunicorn directly:

    gunicorn -c gunicorn.conf.py 'gateway.api:create_app()'

(as docker-compose.yml does).  They are the settings ``satupintu serve`` applies
(gateway/http_server.py), read through the same Settings object, so both ways run the same
gateway: stock gthread workers, JSON log lines, the workers' Prometheus counters added up
through prometheus-client's multiprocess files.  Any gunicorn setting may be added here;
``GUNICORN_CMD_ARGS`` overrides them per deployment.
"""

# Only modules and gunicorn settings at module level: gunicorn ignores other names, so a
# misspelt setting would pass unnoticed (tests/scale/test_container_files.py looks for them).
import core.settings
import gateway.http_server

gateway.http_server.prepare_metrics_folder()  # before any worker imports prometheus-client
globals().update(gateway.http_server.options(core.settings.Settings.from_env()))
