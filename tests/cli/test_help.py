"""``--help`` says what each command does, the units and defaults of its options, and the
environment the client commands read."""

from __future__ import annotations

import pytest

from gateway.cli import main


def help_of(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as done:
        main([*argv, "--help"])
    assert done.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines where it likes


def test_the_top_help_names_the_url_and_the_key(capsys):
    text = help_of(capsys)
    assert "SATUPINTU_URL" in text and "SATUPINTU_API_KEY" in text


def test_submit_says_the_timeout_is_in_seconds_and_its_default(capsys):
    text = help_of(capsys, "submit")
    assert "--timeout SECONDS" in text and "in seconds (default 300)" in text
    assert "SATUPINTU_API_KEY" in text


@pytest.mark.parametrize(("sub", "says"), [("list", "The open (not yet replayed) dead letters"),
                                           ("replay", "back in their agency's queue")])
def test_dead_letters_list_and_replay_have_descriptions(capsys, sub, says):
    assert says in help_of(capsys, "dead-letters", sub)
