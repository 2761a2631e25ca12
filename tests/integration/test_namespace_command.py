"""``satupintu namespace delete``: a namespace's queues and exchanges leave the real broker,
but not while messages are still queued there (unless ``--force``)."""

from __future__ import annotations

import pytest
from support import queue_exists, wait_until

from gateway.cli import main


def test_a_namespace_with_queued_messages_is_kept_unless_forced(settings, broker, capsys: pytest.CaptureFixture):  # noqa: ANN001
    names = broker.names
    broker.channel.basic_publish(names.dispatch, "tax-office", b"{}")
    wait_until(lambda: broker.channel.queue_declare(names.agency_queue("tax-office"), passive=True)
               .method.message_count == 1, 10, message="the message to be queued")
    assert main(["namespace", "delete", settings.namespace]) == 1
    out = capsys.readouterr()
    assert f"{names.agency_queue('tax-office')}: 1 message(s)" in out.out
    assert "--force" in out.err
    assert queue_exists(names.agency_queue("tax-office")) and queue_exists(names.tracker)

    assert main(["namespace", "delete", settings.namespace, "--force"]) == 0
    assert f"namespace {settings.namespace!r} deleted" in capsys.readouterr().out
    assert not queue_exists(names.agency_queue("tax-office"))
    assert not queue_exists(names.tracker) and not queue_exists(names.dead)
    # Deleting it again finds nothing and still succeeds.
    assert main(["namespace", "delete", settings.namespace]) == 0
    assert "no queues on the broker" in capsys.readouterr().out
