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
        )


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
