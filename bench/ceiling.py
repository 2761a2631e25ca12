"""The machine's ceiling: a bare Flask endpoint under gunicorn, driven like the gateway.

FIELD-NOTES measured ~6,000 requests/s for a bare Flask endpoint under gunicorn (2 sync
workers, ``wrk`` as the client) on its 2-core machine, and called it the ceiling for
``POST /v1/applications``.  Machines of the same kind differ (this project's benchmarks
have run on ones about twice as slow as others), so the ``ceiling`` scenario measures
that ceiling on the machine at hand, with the bench's own Python client: a figure of
ours can then be read as a share of what the machine and the client allow at all.

``app`` answers ``POST /v1/applications`` with 202 and an id after parsing the JSON
body, and nothing else: no store, no validation, no authentication.
"""

from __future__ import annotations

import uuid

from flask import Flask, request

app = Flask("satupintu-bench-ceiling")


@app.post("/v1/applications")
def accept():
    request.get_json()
    return {"id": uuid.uuid4().hex}, 202
