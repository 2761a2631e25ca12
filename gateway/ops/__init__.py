"""The operators' dashboard (``/ops/``) and the JSON behind it (``/ops/api/...``)."""
