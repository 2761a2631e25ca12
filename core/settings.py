"""One typed settings object, read from the environment once, at the edge (DESIGN §4)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    """Everything a Satu Pintu process needs to know about its surroundings."""

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
    # host:port the gateway listens on.
    bind: str = "127.0.0.1:8080"
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

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        defaults = cls()
        urls = env.get("SATUPINTU_AMQP_URL")
        return cls(
            database_url=env.get("SATUPINTU_DATABASE_URL", defaults.database_url),
            amqp_urls=tuple(u.strip() for u in urls.split(",") if u.strip()) if urls else defaults.amqp_urls,
            config_dir=env.get("SATUPINTU_CONFIG", defaults.config_dir),
            namespace=env.get("SATUPINTU_NAMESPACE", defaults.namespace),
            bind=env.get("SATUPINTU_BIND", defaults.bind),
            max_body_bytes=int(env.get("SATUPINTU_MAX_BODY_BYTES", defaults.max_body_bytes)),
            **_rate_limit(env.get("SATUPINTU_RATE_LIMIT"), defaults),
            rate_lease_seconds=_seconds(env, "SATUPINTU_RATE_LEASE_SECONDS", defaults.rate_lease_seconds, most=1),
            key_cache_seconds=_seconds(env, "SATUPINTU_KEY_CACHE_SECONDS", defaults.key_cache_seconds, most=300),
        )


def _seconds(env: Mapping[str, str], name: str, default: float, *, most: float) -> float:
    """A duration setting in seconds, 0 to ``most``; 0 turns the feature off."""
    value = env.get(name)
    if value is None or not value.strip():
        return default
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"{name}={value!r}: expected a number of seconds, e.g. {default:g}") from None
    if not 0 <= seconds <= most:  # also refuses NaN
        raise ValueError(f"{name}={value!r}: must be between 0 and {most:g} seconds (0 turns it off)")
    return seconds


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
