"""An example third-party adapter: answers every request itself, approving it.

Registered through the ``satupintu.adapters`` entry-point group, as a real plug-in package
would do in its ``setup.cfg``/``pyproject.toml``::

    [options.entry_points]
    satupintu.adapters =
        echo = satupintu_echo:EchoAdapter
"""

from __future__ import annotations

from typing import Any, ClassVar

from adapters.base import Adapter, AgencyRequest, Outcome, OutcomeKind


class EchoAdapter(Adapter):
    """Approves every request with the request id as the reference and the payload as output."""

    name = "echo"
    options_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "additionalProperties": False,
        "properties": {"prefix": {"type": "string"}},
    }
    operation_schema: ClassVar[dict[str, Any]] = {"type": "object", "additionalProperties": False, "properties": {}}

    def send(self, request: AgencyRequest) -> Outcome:
        prefix = self.agency.options.get("prefix", "ECHO-")
        return Outcome(kind=OutcomeKind.APPROVED, reference=prefix + request.request_id, output=dict(request.payload))
