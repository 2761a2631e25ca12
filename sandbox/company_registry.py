"""The company registry: a REST agency that registers a company and decides at once."""

from __future__ import annotations

import threading
from typing import Any

from flask import Flask, jsonify

from .agency import Agency, now_iso
from .rest import Answer, FilingRoute, filing_route, lookup, rest_app

AGENCY_ID = "company-registry"
RECORD_FIELDS = ("company_name", "owner_nik", "owner_name", "address", "sector")


def create_app(agency: Agency) -> Flask:
    app = rest_app(AGENCY_ID)
    companies: dict[str, dict[str, Any]] = {}
    lock = threading.Lock()
    agency.on_reset(companies.clear)

    def register(request_id: str, payload: dict[str, Any]) -> Answer:
        reason = agency.rejection(payload)
        if reason:
            return 200, {"status": "REJECTED", "reason": reason}
        record = {
            "company_number": agency.reference("AHU-", 10),
            "status": "REGISTERED",
            "registered_at": now_iso(),
        }
        with lock:
            companies[record["company_number"]] = {
                **record,
                **{f: payload.get(f) for f in RECORD_FIELDS},
                "request_id": request_id,
            }
        return 201, record

    filing = FilingRoute(agency, "register_company", ("company_name",), register)
    filing_route(app, "/companies", "register_company", filing)

    @app.get("/companies")
    def lookup_company():
        return lookup(agency, "lookup_company", lambda answer: answer[1])

    @app.get("/companies/<number>")
    def get_company(number: str):
        agency.ledger.count("get_company")
        with lock:
            record = companies.get(number)
        if record is None:
            return jsonify({"error": "no such company", "company_number": number}), 404
        return jsonify(record)

    return app
