"""The naive peer: a Flask handler that files a bundle at the three agencies in turn.

FIELD-NOTES measured "a naive synchronous Flask fan-out" at ~360 bundles/s on its machine,
and the issue asks Satu Pintu to beat it.  Figures from different machines do not compare
(docs/benchmarks.md, "The machine"), so the ``naive`` scenario runs that peer here, against
the same sandbox registries and driven by the same client as ``fast``: what the bundle
costs when nothing is stored, nothing is retried and nothing survives a crash.

``POST /v1/applications`` posts the bundle's data to registry A, then B, then C (one
``requests.Session`` per thread, so connections are kept alive as any sensible naive
handler would), and answers 202 with an id once all three answered 2xx; anything else is
a 502.  The agencies' addresses come from ``SATUPINTU_BENCH_REGISTRY_{A,B,C}_URL``.
"""

from __future__ import annotations

import os
import threading
import uuid

import requests
from flask import Flask, request

app = Flask("satupintu-bench-naive")
AGENCIES = [os.environ[f"SATUPINTU_BENCH_REGISTRY_{x}_URL"] for x in "ABC"]
_local = threading.local()


def _session() -> requests.Session:
    session = getattr(_local, "session", None)
    if session is None:
        session = _local.session = requests.Session()
    return session


@app.post("/v1/applications")
def file_bundle():
    data = request.get_json()["data"]
    payload = {"company_name": data["name"], "owner_nik": data["nik"]}
    session = _session()
    references = []
    for base in AGENCIES:
        answer = session.post(f"{base}/companies", json=payload, timeout=10, allow_redirects=False,
                              headers={"Idempotency-Key": uuid.uuid4().hex})
        if not answer.ok:
            return {"error": f"{base} answered {answer.status_code}"}, 502
        references.append(answer.json().get("company_number"))
    return {"id": uuid.uuid4().hex, "references": references}, 202
