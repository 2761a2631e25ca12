"""One typed settings object, read from the environment once, at the edge (DESIGN §4).

Every ``SATUPINTU_*`` variable a process of ours reads is a field here, grouped and
commented, with a safe default: like zeep's ``Settings``, the object says what the knobs
are and what they default to in one place.  ``Settings.from_env()`` reads the
environment; roles call it once at start-up and pass the object (or the part of it a
component needs) down.  ``unknown_variables()`` names every ``SATUPINTU_*`` variable that
no field reads, with the nearest known name, so a typo is reported instead of ignored.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields

# Variables the test suite, the benchmarks and the sandbox (an independent program) read
# for themselves: not ours to check.
FOREIGN_PREFIXES = ("SATUPINTU_TEST_", "SATUPINTU_BENCH_", "SATUPINTU_FAULTS_", "SATUPINTU_SCALE_",
                    "SATUPINTU_FUZZ_", "SATUPINTU_SANDBOX_", "SATUPINTU_REQUIRE_POSTGRESQL")
# Read by the command line's client commands (the client library), not by a role.
CLIENT_VARIABLES = ("SATUPINTU_URL", "SATUPINTU_API_KEY", "SATUPINTU_HEALTH_URL")
# Set by ``satupintu run --demo`` for the demo catalog's callback secret (``env:`` in its file),
# whichever catalog folder a demo run is pointed at.
DEMO_VARIABLES = ("SATUPINTU_MUNICIPALITY_SECRET",)


@dataclass(frozen=True)
class Settings:
    """Everything a Satu Pintu process needs to know about its surroundings."""

    # -- where things are -----------------------------------------------------------------
    # SQLAlchemy URL of the store; SQLite under ./var/ by default (one machine),
    # postgresql+psycopg://... when processes span machines.
    database_url: str = "sqlite:///var/satupintu.db"
    # One or more AMQP URLs (comma-separated in the environment); clients try them in
    # turn, so a client survives the loss of one node of a cluster.
    amqp_urls: tuple[str, ...] = ("amqp://guest:guest@127.0.0.1:5672/%2F",)
    # The catalog folder: agencies/*.yaml and services/*.yaml.
    config_dir: str = "./config"
    # Prefix of every exchange and queue, so several stacks can share one broker.
    namespace: str = "satupintu"
    # Where processes on one machine share small state files (the circuit breakers' snapshots).
    state_dir: str = "var/state"
    # Documents: file:///path (default under ./var/) or s3://bucket/prefix.
    document_store: str = "file://var/documents"
    # An S3-compatible endpoint for an s3:// document store (empty: AWS itself).
    s3_endpoint_url: str = ""
    # The virus scanner: unix:///path or tcp://host:port (empty: none configured).
    clamd: str = ""
    # Outgoing mail: smtp:// or smtps://user:pass@host:port (empty: no email).
    smtp_url: str = ""
    # An RFC 3161 time-stamping authority (empty: no timestamps).
    tsa_url: str = ""
    # The hall's time zone: working days and shown times.
    timezone: str = "Asia/Jakarta"

    # -- the gateway --------------------------------------------------------------------
    # host:port the gateway listens on.
    bind: str = "127.0.0.1:8080"
    # gunicorn worker processes and threads per process.
    web_workers: int = 2
    web_threads: int = 8
    # The longest a client may pause while sending a request (between two reads of its
    # head or body), in seconds; then the connection is closed and its thread freed. A bound
    # per pause, not on the whole head: the reverse proxy bounds that (docs/deployment.md).
    web_read_timeout: float = 1.0
    # Server-sent event streams (GET /v1/applications/{id}/events) each hold a thread: at
    # most this many per gateway process, never more than half its threads, and this many
    # per client in a process (429 with Retry-After beyond); each lasts at most
    # events_max_seconds (the client resumes with Last-Event-ID).
    events_streams: int = 4
    events_streams_per_client: int = 2
    events_max_seconds: float = 300.0
    # Largest request body the gateway reads (413 beyond).
    max_body_bytes: int = 1_048_576
    # Per-client rate limit, shared by every gateway process through the store (a token
    # bucket): requests per second, and the burst a client may spend at once; 0 turns it off.
    rate_limit: float = 100.0
    rate_burst: int = 200
    # How long a gateway process may keep tokens it leased from a client's bucket (one
    # UPSERT takes several when the client is busy); 0 takes one token per request.
    rate_lease_seconds: float = 0.1
    # How long a process trusts an API key it has verified before asking the store again:
    # the longest a revoked or rotated key keeps working in another process; 0 turns it off.
    key_cache_seconds: float = 5.0
    # Dashboard and counter sessions: ended after this long without a request, and after
    # this long in all (seconds); cookies are marked Secure when the deployment says it is
    # served over TLS (behind a proxy that terminates it, too), not only when a request
    # arrives as https.
    session_idle_seconds: float = 1800.0
    session_max_seconds: float = 8 * 3600.0
    behind_tls: bool = False
    # The bearer token a Prometheus scraper may use for /metrics instead of an ops key
    # (empty: only ops keys).
    metrics_token: str = ""

    # -- the worker -----------------------------------------------------------------------
    # Seconds an agency call must run before its ``sent`` event is published; 0: always.
    sent_event_after: float = 1.0
    # AMQP heartbeat in seconds.
    amqp_heartbeat: int = 30

    # -- outbound connections (the egress policy) -----------------------------------------
    # Whether agencies may sit on loopback or private addresses (true for the sandbox and
    # many government networks; link-local and cloud metadata are refused always).
    egress_allow_loopback: bool = True
    egress_allow_private: bool = True

    # -- personal data ------------------------------------------------------------------
    # The key of the NIK's keyed hash (the search index); set your own in production.
    nik_hash_key: str = "satupintu-development-nik-key"
    # The key documents are encrypted with at rest (empty: a development key).
    document_key: str = ""
    # The server key each client's webhook secret is derived with (with a random nonce per
    # client that the store keeps): a copy of the store alone cannot sign webhooks.
    webhook_key: str = "satupintu-development-webhook-key"

    # -- processes ------------------------------------------------------------------------
    log_level: str = "INFO"
    # Each role's own /metrics port (empty: none) and address.
    metrics_port: str = ""
    metrics_addr: str = "127.0.0.1"
    # The roles ``satupintu run`` supervises (comma-separated; empty: all).
    roles: str = ""

    # -- the operators' dashboard -----------------------------------------------------------
    # An agency's success rate below warn_pct is shown amber, below alert_pct red.
    ops_success_warn_pct: float = 95.0
    ops_success_alert_pct: float = 80.0
    # Dead letters a bulk replay sends per second unless the operator asks for another rate.
    ops_replay_rate: float = 5.0

    # -- the command line's client commands (submit, status, top) ---------------------------
    # The gateway they talk to (empty: http://<bind>), and the API key they send.
    url: str = ""
    api_key: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """The settings in ``env`` (the process's environment by default); bad values raise ValueError."""
        env = os.environ if env is None else env
        d = cls()

        def text(name: str, default: str) -> str:
            value = env.get(name)
            return default if value is None or not value.strip() else value.strip()

        urls = env.get("SATUPINTU_AMQP_URL")
        return cls(
            database_url=text("SATUPINTU_DATABASE_URL", d.database_url),
            amqp_urls=tuple(u.strip() for u in urls.split(",") if u.strip()) if urls else d.amqp_urls,
            config_dir=text("SATUPINTU_CONFIG", d.config_dir),
            namespace=text("SATUPINTU_NAMESPACE", d.namespace),
            state_dir=text("SATUPINTU_STATE_DIR", d.state_dir),
            document_store=text("SATUPINTU_DOCUMENT_STORE", d.document_store),
            s3_endpoint_url=text("SATUPINTU_S3_ENDPOINT_URL", d.s3_endpoint_url),
            clamd=text("SATUPINTU_CLAMD", d.clamd),
            smtp_url=text("SATUPINTU_SMTP_URL", d.smtp_url),
            tsa_url=text("SATUPINTU_TSA_URL", d.tsa_url),
            timezone=text("SATUPINTU_TIMEZONE", d.timezone),
            bind=text("SATUPINTU_BIND", d.bind),
            web_workers=_number(env, "SATUPINTU_WEB_WORKERS", d.web_workers, least=1, most=64, kind=int),
            web_threads=_number(env, "SATUPINTU_WEB_THREADS", d.web_threads, least=1, most=256, kind=int),
            web_read_timeout=_number(env, "SATUPINTU_WEB_READ_TIMEOUT", d.web_read_timeout, most=3600),
            events_streams=_number(env, "SATUPINTU_EVENTS_STREAMS", d.events_streams, most=1024, kind=int),
            events_streams_per_client=_number(env, "SATUPINTU_EVENTS_STREAMS_PER_CLIENT",
                                              d.events_streams_per_client, most=1024, kind=int),
            events_max_seconds=_number(env, "SATUPINTU_EVENTS_MAX_SECONDS", d.events_max_seconds, least=1,
                                       most=3600),
            max_body_bytes=_number(env, "SATUPINTU_MAX_BODY_BYTES", d.max_body_bytes, least=1024,
                                   most=1 << 31, kind=int),
            **_rate_limit(env.get("SATUPINTU_RATE_LIMIT"), d),
            rate_lease_seconds=_number(env, "SATUPINTU_RATE_LEASE_SECONDS", d.rate_lease_seconds, most=1),
            key_cache_seconds=_number(env, "SATUPINTU_KEY_CACHE_SECONDS", d.key_cache_seconds, most=300),
            metrics_token=text("SATUPINTU_METRICS_TOKEN", d.metrics_token),
            session_idle_seconds=_number(env, "SATUPINTU_SESSION_IDLE_SECONDS", d.session_idle_seconds, least=60,
                                         most=86400),
            session_max_seconds=_number(env, "SATUPINTU_SESSION_MAX_SECONDS", d.session_max_seconds, least=60,
                                        most=7 * 86400),
            behind_tls=_flag(env, "SATUPINTU_BEHIND_TLS", d.behind_tls),
            sent_event_after=_number(env, "SATUPINTU_SENT_EVENT_AFTER", d.sent_event_after, most=3600),
            amqp_heartbeat=_number(env, "SATUPINTU_AMQP_HEARTBEAT", d.amqp_heartbeat, most=3600, kind=int),
            egress_allow_loopback=_flag(env, "SATUPINTU_EGRESS_ALLOW_LOOPBACK", d.egress_allow_loopback),
            egress_allow_private=_flag(env, "SATUPINTU_EGRESS_ALLOW_PRIVATE", d.egress_allow_private),
            nik_hash_key=text("SATUPINTU_NIK_HASH_KEY", d.nik_hash_key),
            document_key=text("SATUPINTU_DOCUMENT_KEY", d.document_key),
            webhook_key=text("SATUPINTU_WEBHOOK_KEY", d.webhook_key),
            log_level=text("SATUPINTU_LOG_LEVEL", d.log_level).upper(),
            metrics_port=text("SATUPINTU_METRICS_PORT", d.metrics_port),
            metrics_addr=text("SATUPINTU_METRICS_ADDR", d.metrics_addr),
            roles=text("SATUPINTU_ROLES", d.roles),
            ops_success_warn_pct=_number(env, "SATUPINTU_OPS_SUCCESS_WARN_PCT", d.ops_success_warn_pct, most=100),
            ops_success_alert_pct=_number(env, "SATUPINTU_OPS_SUCCESS_ALERT_PCT", d.ops_success_alert_pct, most=100),
            ops_replay_rate=_number(env, "SATUPINTU_OPS_REPLAY_RATE", d.ops_replay_rate, least=0.1, most=100),
            url=text("SATUPINTU_URL", d.url),
            api_key=text("SATUPINTU_API_KEY", d.api_key),
        )


# The environment variable behind each field (the rate limit's two fields share one).
VARIABLES = frozenset(
    {"SATUPINTU_" + f.name.upper() for f in fields(Settings)}
    - {"SATUPINTU_AMQP_URLS", "SATUPINTU_CONFIG_DIR", "SATUPINTU_RATE_BURST"}
    | {"SATUPINTU_AMQP_URL", "SATUPINTU_CONFIG", *CLIENT_VARIABLES, *DEMO_VARIABLES}
)


def unknown_variables(env: Mapping[str, str] | None = None, *, also_known: Iterable[str] = ()) -> list[str]:
    """One line per ``SATUPINTU_*`` variable nothing reads, with the nearest known name.

    ``also_known`` are names read elsewhere (the catalog's ``${NAME}`` and ``env:NAME``).
    """
    env = os.environ if env is None else env
    known = VARIABLES | set(also_known)
    lines = []
    for name in sorted(env):
        if not name.startswith("SATUPINTU_") or name in known or name.startswith(FOREIGN_PREFIXES):
            continue
        near = difflib.get_close_matches(name, sorted(VARIABLES), n=1, cutoff=0.6)
        lines.append(f"{name} is not a setting of Satu Pintu" + (f"; did you mean {near[0]}?" if near else ""))
    return lines


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = env.get(name)
    if value is None or not value.strip():
        return default
    word = value.strip().lower()
    if word in {"1", "true", "yes", "on"}:
        return True
    if word in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"{name}={value!r}: expected true or false")


def _number(env: Mapping[str, str], name: str, default: float, *, least: float = 0, most: float,
            kind: type = float):
    """A numeric setting between ``least`` and ``most``; 0 turns a duration off."""
    value = env.get(name)
    if value is None or not value.strip():
        return default
    try:
        number = kind(value.strip())
    except ValueError:
        raise ValueError(f"{name}={value!r}: expected a number, e.g. {default:g}") from None
    if not least <= number <= most:  # also refuses NaN
        raise ValueError(f"{name}={value!r}: must be between {least:g} and {most:g}")
    return number


def _rate_limit(value: str | None, defaults: Settings) -> dict[str, float | int]:
    """``SATUPINTU_RATE_LIMIT=RATE[:BURST]`` (requests per second per client); 0 turns it off."""
    if not value or not value.strip():
        return {"rate_limit": defaults.rate_limit, "rate_burst": defaults.rate_burst}
    rate_text, _, burst_text = value.strip().partition(":")
    try:
        rate = float(rate_text)
        burst = int(burst_text) if burst_text else max(1, int(rate * 2))
    except ValueError:
        raise ValueError(f"SATUPINTU_RATE_LIMIT={value!r}: expected RATE or RATE:BURST, e.g. 100:200") from None
    if rate < 0 or burst < 1:
        raise ValueError(f"SATUPINTU_RATE_LIMIT={value!r}: the rate must be >= 0 and the burst >= 1")
    return {"rate_limit": rate, "rate_burst": burst}
