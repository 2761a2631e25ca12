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
        )
