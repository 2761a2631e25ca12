"""Sandbox agencies: pretend government agencies that Satu Pintu talks to over real HTTP.

An independent program (``python -m sandbox``): it imports nothing from the gateway, so
the gateway is tested against agencies exactly as it would meet real ones. See
``docs/sandbox.md``.
"""

AGENCY_IDS = ("company-registry", "municipality", "tax-office", "social-security")

__all__ = ["AGENCY_IDS"]
