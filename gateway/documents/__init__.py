"""Documents uploaded by front offices: streamed in, scanned by ClamAV, sealed, stored, read back.

``service.Documents`` is the upload use case; ``store`` the folder or S3 bucket behind it;
``sealing`` the encryption at rest; ``scan`` and ``sniff`` the virus scan and the type from
the bytes; ``check`` an application's documents at submission; ``housekeeping`` the sweep of
unused uploads.
"""
