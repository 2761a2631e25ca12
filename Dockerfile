# Satu Pintu: one image for every role; the command picks the role (serve by default).
FROM python:3.11-slim AS build
WORKDIR /src
RUN pip install --no-cache-dir --upgrade pip wheel
COPY pyproject.toml setup.cfg README.md ./
COPY gateway gateway
COPY adapters adapters
COPY broker broker
COPY schemas schemas
COPY sandbox sandbox
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[postgres,sandbox]'

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 satupintu
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
WORKDIR /app
COPY config config
COPY examples examples
USER satupintu
ENV SATUPINTU_CONFIG=/app/config \
    SATUPINTU_BIND=0.0.0.0:8080 \
    SATUPINTU_DATABASE_URL=sqlite:////app/var/satupintu.db \
    PYTHONUNBUFFERED=1
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"
ENTRYPOINT ["satupintu"]
# The gateway runs under gunicorn (gthread workers); other roles: relay, worker, tracker.
CMD ["serve"]
