"""The social-security office: a SOAP 1.1 agency that takes an enrolment and is polled.

An enrolment is decided ``decision_delay`` seconds after it is received; until then its
status is 41 (received), and it may be cancelled (80).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from spyne import ComplexModel, Integer, ServiceBase, Unicode, rpc

from .agency import Agency
from .soap_common import client_fault, file_once, require, stored_answer, wsgi_app

AGENCY_ID = "social-security"
TNS = "urn:satupintu:sandbox:social"
RECEIVED, ENROLLED, CANCELLED, REJECTED = 41, 50, 80, 90


class EnrolmentResult(ComplexModel):
    __namespace__ = TNS
    ticket = Unicode
    status_code = Integer
    reason = Unicode
    bpjs_number = Unicode


def create_app(agency: Agency):
    enrolments: dict[str, dict[str, Any]] = {}  # ticket -> enrolment
    lock = threading.Lock()
    agency.on_reset(enrolments.clear)

    def status_of(enrolment: dict[str, Any]) -> dict[str, Any]:
        result = {"ticket": enrolment["ticket"], "status_code": RECEIVED}
        if enrolment["cancelled"]:
            result["status_code"] = CANCELLED
        elif time.monotonic() >= enrolment["decide_at"]:
            if enrolment["reason"]:
                result.update(status_code=REJECTED, reason=enrolment["reason"])
            else:
                result.update(
                    status_code=ENROLLED, bpjs_number=enrolment["bpjs_number"]
                )
        return result

    def find(ticket: str) -> dict[str, Any]:
        require(ticket=ticket)
        enrolment = enrolments.get(ticket)
        if enrolment is None:
            raise client_fault(f"unknown ticket {ticket}", "Client.NotFound")
        return enrolment

    class SocialSecurityService(ServiceBase):
        @rpc(Unicode, Unicode, Unicode, Unicode, Integer, _returns=EnrolmentResult)
        def EnrolEmployer(ctx, request_id, company_number, npwp, name, employees):
            require(request_id=request_id, company_number=company_number)

            def enrol() -> dict[str, Any]:
                fields = {"company_number": company_number, "npwp": npwp, "name": name}
                ticket = agency.reference("TKT-", 12)
                enrolment = {
                    "ticket": ticket,
                    "request_id": request_id,
                    "reason": agency.rejection({k: v for k, v in fields.items() if v}),
                    "bpjs_number": agency.reference("", 11),
                    "decide_at": time.monotonic() + agency.knobs.get("decision_delay"),
                    "cancelled": False,
                    "employees": employees,
                    **fields,
                }
                with lock:
                    enrolments[ticket] = enrolment
                return {"ticket": ticket, "status_code": RECEIVED}

            return EnrolmentResult(
                **file_once(ctx, agency, request_id, "EnrolEmployer", enrol)
            )

        @rpc(Unicode, _returns=EnrolmentResult)
        def GetEnrolmentStatus(ctx, ticket):
            agency.ledger.count("GetEnrolmentStatus")
            return EnrolmentResult(**status_of(find(ticket)))

        @rpc(Unicode, _returns=EnrolmentResult)
        def CancelEnrolment(ctx, ticket):
            agency.ledger.count("CancelEnrolment")
            with lock:
                enrolment = find(ticket)
                current = status_of(enrolment)
                if current["status_code"] not in (RECEIVED, CANCELLED):
                    raise client_fault("already decided")
                enrolment["cancelled"] = True
            return EnrolmentResult(ticket=ticket, status_code=CANCELLED)

        @rpc(Unicode, _returns=EnrolmentResult)
        def LookupEnrolment(ctx, request_id):
            answer = stored_answer(agency, "LookupEnrolment", request_id)
            with lock:
                enrolment = enrolments.get(answer["ticket"])
            return EnrolmentResult(**(status_of(enrolment) if enrolment else answer))

    return wsgi_app(SocialSecurityService, TNS, "SocialSecurity")
