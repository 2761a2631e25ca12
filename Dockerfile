# Satu Pintu: one image for every role; the command picks the role (serve by default).
#   docker build -t satupintu .
#   docker run satupintu relay | worker [--agency ID] | tracker | sandbox ... | db upgrade
# docker-compose.yml runs the whole stack from it; docs/deployment.md explains the sizing.

# --- build: wheels of Satu Pintu and of everything it needs (compilers stay here) ---------
FROM python:3.11-slim AS build
WORKDIR /src
RUN pip install --no-cache-dir --upgrade pip wheel
COPY pyproject.toml setup.cfg README.md ./
COPY core core
COPY satupintu satupintu
COPY gateway gateway
COPY adapters adapters
COPY broker broker
COPY schemas schemas
COPY sandbox sandbox
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[postgres,sandbox]'

# --- run: the wheels installed, no build tools, a user without privileges ----------------
FROM python:3.11-slim
RUN useradd --create-home --uid 10001 satupintu
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
WORKDIR /app
COPY config config
COPY examples examples
COPY gunicorn.conf.py gunicorn.conf.py
# var/: the SQLite store of a one-container try-out, the circuit breakers' shared state and
# the document folder (made here, so a volume mounted on it belongs to the user below).
RUN mkdir -p /app/var/state /app/var/documents && chown -R satupintu:satupintu /app/var
USER satupintu
ENV SATUPINTU_CONFIG=/app/config \
    SATUPINTU_BIND=0.0.0.0:8080 \
    SATUPINTU_DATABASE_URL=sqlite:////app/var/satupintu.db \
    SATUPINTU_STATE_DIR=/app/var/state \
    SATUPINTU_HEALTH_URL=http://127.0.0.1:8080/healthz \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
VOLUME ["/app/var"]
EXPOSE 8080
# The gateway answers /healthz on 8080; relay, worker and tracker serve /metrics when
# SATUPINTU_METRICS_PORT is set, and point SATUPINTU_HEALTH_URL there (docker-compose.yml).
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(0 if urllib.request.urlopen(os.environ['SATUPINTU_HEALTH_URL'], timeout=2).status == 200 else 1)"]
ENTRYPOINT ["satupintu"]
# The gateway under gunicorn (gthread workers); or: gunicorn -c gunicorn.conf.py 'gateway.api:create_app()'
CMD ["serve"]
