"""The one hash-chain writer (``gateway/store/chain.py``): each application's events link to
the one before, the hash keeps the form every stored chain was made with, and a row the store
turned away is not part of the chain."""

import datetime as dt

from gateway.store.chain import GENESIS, EventChain, event_hash, event_row

MOMENT = dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC)


def row(event_id: str, application_id: str = "app_1") -> dict:
    return event_row(event_id=event_id, application_id=application_id, type="status", request_id="req_1",
                     step="tax", status="queued", detail={"reason": "Rüdiger ✓", "n": [1, 2.5]},
                     cause="submitted", occurred_at=MOMENT)


def test_the_hash_keeps_the_form_stored_chains_were_made_with():
    first = EventChain().append(row("e1"))
    assert first["prev_hash"] == GENESIS
    # sha256 of GENESIS + the canonical JSON (sorted keys, no spaces, UTF-8 as is, occurred_at in Z form).
    assert first["hash"] == "8dc4964ace6e19b45e143a3e4d47014bab1295c36a994bc2ff333180cce5f6bb"


def test_each_application_chains_its_own_events_in_order():
    chain = EventChain()
    a1, b1, a2 = chain.append(row("a1")), chain.append(row("b1", "app_2")), chain.append(row("a2"))
    assert a1["prev_hash"] == b1["prev_hash"] == GENESIS
    assert a2["prev_hash"] == a1["hash"]
    assert a2["hash"] == event_hash(a1["hash"], a2, MOMENT) != a1["hash"]


def test_a_linked_row_that_was_not_stored_leaves_the_head_where_it_was():
    heads = {"app_1": "f" * 64}
    chain = EventChain(head_of=heads.__getitem__)  # the store's head, read once
    refused = chain.link(row("dup"))
    assert refused["prev_hash"] == "f" * 64
    stored = chain.append(row("new"))
    assert stored["prev_hash"] == "f" * 64 and chain.heads["app_1"] == stored["hash"]
