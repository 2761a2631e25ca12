"""The Flask app factory: blueprints for /v1, callbacks, health, metrics, OpenAPI and /ops."""

from __future__ import annotations

import logging

from flask import Flask
from sqlalchemy import Engine

from core.model import Catalog
from core.settings import Settings

from ..catalog import load_catalog
from ..store import make_engine
from ..store.migrations import require_current
from . import applications, callbacks, documents, events, health, metrics, openapi, problems, services
from .context import Context


def create_app(settings: Settings | None = None, *, catalog: Catalog | None = None,
               engine: Engine | None = None) -> Flask:
    """Build the gateway app; refuses to start on an invalid catalog or an unmigrated store."""
    settings = settings or Settings.from_env()
    catalog = catalog or load_catalog(settings.config_dir, timezone=settings.timezone)
    if engine is None:
        engine = make_engine(settings.database_url)
        require_current(engine)
    app = Flask("satupintu")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False
    app.extensions["satupintu"] = Context(settings=settings, catalog=catalog, engine=engine)
    problems.install(app)
    for module in (applications, events, services, documents, callbacks, health, metrics, openapi):
        app.register_blueprint(module.bp)
    try:
        from ..ops import views as ops_views
    except ImportError:  # the dashboard is optional in a stripped-down deployment
        logging.getLogger("satupintu.api").info("ops dashboard not installed")
    else:
        app.register_blueprint(ops_views.bp)
    return app
