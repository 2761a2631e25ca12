"""Sample files for the document tests: real signatures, random filler."""

from __future__ import annotations

import os

# ClamAV's standard test file (https://www.eicar.org): harmless, detected as malware by design.
EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


def pdf(size: int = 2000) -> bytes:
    """A PDF's signature and trailer around ``size`` bytes of filler."""
    head, tail = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nstream\n", b"\nendstream\nendobj\ntrailer\n<<>>\n%%EOF\n"
    return head + os.urandom(max(0, size - len(head) - len(tail))) + tail


PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89" + \
    b"\x00" * 64
EXE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00\xb8" + b"\x00" * 47 + b"PE\x00\x00" + b"\x00" * 200


