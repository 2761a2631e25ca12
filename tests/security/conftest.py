"""Fixtures of the security tests: a second client, direct store access, the store's fingerprint."""

from __future__ import annotations

import hashlib
import json

import pytest
from sqlalchemy import select

from gateway.store import tables as t
from gateway.store.documents import application_documents, documents

# Everything a request could change; rate_limits changes with authenticated requests by design.
STORED = (t.clients, t.applications, t.requests, t.outbox, t.events, t.dead_letters, t.callback_signatures,
          t.webhooks, documents, application_documents)


@pytest.fixture
def fingerprint(engine):
    """A function giving a digest of every stored row, to show that a request changed nothing."""
    def digest() -> str:
        h = hashlib.sha256()
        with engine.connect() as conn:
            for table in STORED:
                for row in conn.execute(select(table).order_by(*table.primary_key.columns)):
                    h.update(json.dumps(list(row), default=str).encode())
        return h.hexdigest()
    return digest


@pytest.fixture
def submitted(client, auth, example):
    """One application submitted by the ``auth`` client."""
    response = client.post("/v1/applications", json=example, headers=auth)
    assert response.status_code == 202, response.get_data(as_text=True)
    return response.get_json()
