"""GET /v1/services: the catalog."""

from __future__ import annotations

from flask import Blueprint, Response, json

from .context import ctx, require

bp = Blueprint("services", __name__, url_prefix="/v1")


@bp.get("/services")
@require("read")
def catalog() -> Response:
    services = [s.public() for s in sorted(ctx().catalog.services.values(), key=lambda s: s.id)]
    return Response(json.dumps({"items": services}), mimetype="application/json")
