"""``audit verify`` right after start: an anchor at once where the store has one writer
(SQLite), and otherwise (PostgreSQL) why not and when it will."""

from __future__ import annotations

import re

from gateway.cli import main


def test_a_run_right_after_a_submission_anchors_it_or_says_when_it_will(client, auth, example, engine, capsys):
    assert client.post("/v1/applications", json=example, headers=auth).status_code == 202
    assert main(["audit", "verify"]) == 0
    out = capsys.readouterr().out
    if engine.dialect.name == "sqlite":  # one writer at a time: no lower id can still be committing
        anchor = re.search(r"^anchor (\d+:[0-9a-f]{64}) ", out, re.M)
        assert anchor, out
        assert main(["audit", "verify", "--anchor", anchor.group(1)]) == 0
    else:
        assert re.search(r"^no anchor yet: the \d+ event row\(s\) are younger than 60 s .*"
                         r"run again after \d\d:\d\d:\d\d UTC to anchor them$", out, re.M), out
