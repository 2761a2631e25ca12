"""``satupintu dead-letters list``: fitted to the terminal, with the application, and whole in ``--json``."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import insert

from gateway.cli import main
from gateway.store import tables as t

REASON = "agency company-registry answered 401 Unauthorized: " + "the token was refused by the gateway " * 10


@pytest.fixture
def dead_letter(engine):
    with engine.begin() as conn:
        conn.execute(insert(t.dead_letters).values(
            message_id="m-1", request_id="req_1", application_id="app_0123456789", agency="company-registry",
            reason=REASON, attempts=1, body={"step": "company"}, created_at=dt.datetime.now(dt.UTC)))
    return REASON


@pytest.mark.parametrize("columns", [120, 200])
def test_the_table_fits_the_terminal_and_names_the_application(dead_letter, monkeypatch, capsys, columns):
    monkeypatch.setenv("COLUMNS", str(columns))  # shutil.get_terminal_size reads it first
    assert main(["dead-letters", "list"]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert "application_id" in header.split() and "app_0123456789" in row.split()
    assert len(row) <= columns and row.endswith("...")
    assert "  1  " in row and "  agency company-registry answered 401" in row  # attempts, then the reason


def test_json_has_every_field_and_the_whole_reason(dead_letter, capsys):
    assert main(["dead-letters", "list", "--json"]) == 0
    [item] = json.loads(capsys.readouterr().out)["items"]
    assert item["reason"] == REASON and item["application_id"] == "app_0123456789" and item["step"] == "company"
