"""The tax office: a SOAP 1.1 agency that registers a taxpayer and decides at once."""

from __future__ import annotations

from typing import Any

from spyne import ComplexModel, Integer, ServiceBase, Unicode, rpc

from .agency import Agency
from .soap_common import XROAD_ID, file_once, require, stored_answer, wsgi_app

AGENCY_ID = "tax-office"
TNS = "urn:satupintu:sandbox:tax"
REGISTERED, REJECTED = 50, 90


class TaxpayerResult(ComplexModel):
    __namespace__ = TNS
    npwp = Unicode
    status_code = Integer
    reason = Unicode


def create_app(agency: Agency):
    taxpayers: dict[
        str, dict[str, Any]
    ] = {}  # npwp -> record, for completeness of state
    agency.on_reset(taxpayers.clear)

    class TaxOfficeService(ServiceBase):
        @rpc(Unicode, Unicode, Unicode, Unicode, Unicode, _returns=TaxpayerResult)
        def RegisterTaxpayer(ctx, request_id, company_number, nik, name, address):
            request_id = request_id or ctx.transport.req_env.get(XROAD_ID)
            require(request_id=request_id, company_number=company_number)

            def register() -> dict[str, Any]:
                fields = {
                    "company_number": company_number,
                    "nik": nik,
                    "name": name,
                    "address": address,
                }
                reason = agency.rejection(
                    {k: v for k, v in fields.items() if v is not None}
                )
                if reason:
                    return {"npwp": None, "status_code": REJECTED, "reason": reason}
                npwp = agency.reference("", 15)
                taxpayers[npwp] = {**fields, "request_id": request_id}
                return {"npwp": npwp, "status_code": REGISTERED, "reason": None}

            return TaxpayerResult(
                **file_once(ctx, agency, request_id, "RegisterTaxpayer", register)
            )

        @rpc(Unicode, _returns=TaxpayerResult)
        def LookupTaxpayer(ctx, request_id):
            return TaxpayerResult(**stored_answer(agency, "LookupTaxpayer", request_id))

    return wsgi_app(TaxOfficeService, TNS, "TaxOffice")
