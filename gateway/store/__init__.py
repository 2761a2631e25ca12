"""The store: SQLAlchemy Core tables, versioned migrations and queries (SQLite or PostgreSQL)."""

from .engine import make_engine

__all__ = ["make_engine"]
