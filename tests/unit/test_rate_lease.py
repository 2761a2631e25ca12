"""Leased rate-limit tokens: several processes on one store bucket, on a fake clock.

The bucket is the real UPSERT on a SQLite file of the test's own; the "processes" are
``Leases`` objects sharing it, as gunicorn workers and gateway machines share the store.
"""

from __future__ import annotations

import random

import pytest

from core.settings import Settings
from gateway.api import ratelimit
from gateway.store import make_engine
from gateway.store.migrations import upgrade


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def engine(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def statements(monkeypatch):
    """Every UPSERT the leases run: (tokens asked for, tokens granted)."""
    seen = []
    real = ratelimit.take_many

    def counted(*args, **kwargs):
        granted, left = real(*args, **kwargs)
        seen.append((args[2], granted))
        return granted, left
    monkeypatch.setattr(ratelimit, "take_many", counted)
    return seen


def leases(clock: Clock) -> ratelimit.Leases:
    return ratelimit.Leases(clock=clock, monotonic=clock)


def test_a_burst_doubles_the_lease_each_time(engine, statements):
    clock = Clock()  # standing still: every request at once
    process = leases(clock)
    for _ in range(63):
        assert process.spend(engine, "cli_a", rate=1000, burst=2000, lease=0.1).allowed
    assert statements == [(1, 1), (2, 2), (4, 4), (8, 8), (16, 16), (32, 32)]  # 63 requests, 6 UPSERTs


def test_a_steady_pace_leases_what_it_will_almost_surely_spend(engine, statements):
    clock = Clock()
    process = leases(clock)
    for _ in range(400):  # 400 requests a second: 40 per lease period of 0.1 s
        process.spend(engine, "cli_a", rate=1000, burst=2000, lease=0.1)
        clock.now += 0.0025
    assert statements[-1][0] in (20, 21)  # 40 - 3 x sqrt(40), give or take the clock's rounding
    assert len(statements) < 30  # instead of 400


def test_a_slow_pace_takes_one_token_at_a_time(engine, statements):
    clock = Clock()
    process = leases(clock)
    for _ in range(50):  # 20 a second: 2 per lease period, too few to be sure of spending 2
        process.spend(engine, "cli_a", rate=1000, burst=2000, lease=0.1)
        clock.now += 0.05
    assert set(statements) == {(1, 1)}


def test_leftover_tokens_expire_with_their_lease_and_the_next_lease_follows_the_pace(engine, statements):
    clock = Clock()
    process = leases(clock)
    for _ in range(4):  # leases of 1, 2 and 4 tokens: 3 of the last left over
        process.spend(engine, "cli_a", rate=1000, burst=2000, lease=0.1)
    clock.now += 0.1
    process.spend(engine, "cli_a", rate=1000, burst=2000, lease=0.1)
    assert statements[-1] == (1, 1)  # one of the 4 spent in 0.1 s: 10 a second


@pytest.mark.parametrize("pace", [5, 30, 100, 400, 2000])
def test_few_leased_tokens_go_unspent_at_any_pace(engine, statements, pace):
    clock, rng = Clock(), random.Random(pace)
    process = leases(clock)
    spent = 0
    for _ in range(3000):
        clock.now += rng.expovariate(pace)
        spent += process.spend(engine, "cli_a", rate=10_000, burst=20_000, lease=0.1).allowed
    leased = sum(granted for _, granted in statements)
    assert spent == 3000
    assert leased - spent <= 0.05 * leased, (leased, spent, len(statements))


def test_a_lease_never_grows_past_rate_times_its_seconds(engine, statements):
    clock = Clock()
    process = leases(clock)
    for _ in range(200):
        process.spend(engine, "cli_a", rate=100, burst=200, lease=0.1)
    assert max(asked for asked, _ in statements) == 10


def test_near_the_limit_a_lease_shrinks_to_one_token(engine, statements):
    clock = Clock()
    process = leases(clock)
    verdicts = [process.spend(engine, "cli_a", rate=100, burst=200, lease=0.1) for _ in range(200)]
    assert sum(v.allowed for v in verdicts) == 190  # the bucket holds the burst less rate x lease (10 tokens)
    assert any(asked > 1 and granted == 1 for asked, granted in statements)  # fewer left than asked for
    assert not verdicts[-1].allowed and verdicts[-1].retry_after == 1


@pytest.mark.parametrize("rate, burst, lease, expected", [
    (1, 5, 0.1, ratelimit.Plan(0.0, 1, 5.0)),        # small limits: one token per request, the whole burst
    (2, 10, 0.1, ratelimit.Plan(0.0, 1, 10.0)),
    (100, 200, 0.1, ratelimit.Plan(0.1, 10, 190.0)),
    (100, 20, 0.1, ratelimit.Plan(0.02, 2, 18.0)),   # the lease shortened: the reserve stays within a tenth
    (100, 200, 0.0, ratelimit.Plan(0.0, 1, 200.0)),  # SATUPINTU_RATE_LEASE_SECONDS=0
])
def test_the_plan(rate, burst, lease, expected):
    assert ratelimit.plan(rate, burst, lease) == expected


def test_small_limits_run_one_upsert_per_request_exactly_as_before(engine, statements):
    clock = Clock()
    process = leases(clock)
    verdicts = [process.spend(engine, "cli_a", rate=1, burst=5, lease=0.1).allowed for _ in range(8)]
    assert verdicts == [True] * 5 + [False] * 3
    assert statements == [(1, 1)] * 5 + [(1, 0)] * 3


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_no_window_lets_more_through_than_the_bucket_allows_however_many_processes(engine, seed):
    """Four processes, a client sending ~3x its limit with pauses: in every interval [a, b]
    at most burst + rate x (b - a) requests get through, and leasing loses little of the
    limit against one exact bucket fed the same requests."""
    rate, burst, lease = 200.0, 100, 0.1
    clock, rng = Clock(), random.Random(seed)
    processes = [leases(clock) for _ in range(4)]
    start, arrivals, admitted = clock.now, [], []
    while clock.now - start < 3.0:
        clock.now += rng.expovariate(1000.0) if rng.random() < 0.98 else rng.uniform(0.05, 0.3)
        arrivals.append(clock.now)
        if rng.choice(processes).spend(engine, "cli_a", rate=rate, burst=burst, lease=lease).allowed:
            admitted.append(clock.now)
    for i, first in enumerate(admitted):
        for j in range(i, len(admitted)):
            assert j - i + 1 <= burst + rate * (admitted[j] - first) + 1e-6, (first, admitted[j], j - i + 1)
    tokens, last, exact = float(burst), start, 0
    for moment in arrivals:
        tokens, last = min(burst, tokens + (moment - last) * rate), moment
        if tokens >= 1:
            tokens, exact = tokens - 1, exact + 1
    assert 0.9 * exact <= len(admitted) <= exact


def test_a_forked_child_does_not_spend_its_parents_leased_tokens(engine, statements, monkeypatch):
    clock = Clock()
    process = leases(clock)
    for _ in range(4):  # the last lease leaves 3 tokens
        process.spend(engine, "cli_a", rate=1000, burst=2000, lease=0.1)
    monkeypatch.setattr(ratelimit.os, "getpid", lambda: -1)
    before = len(statements)
    process.spend(engine, "cli_a", rate=1000, burst=2000, lease=0.1)
    assert len(statements) == before + 1


@pytest.mark.parametrize("value, seconds", [(None, 0.1), ("0", 0.0), ("0.25", 0.25)])
def test_the_lease_setting_reads_seconds(value, seconds):
    env = {} if value is None else {"SATUPINTU_RATE_LEASE_SECONDS": value}
    assert Settings.from_env(env).rate_lease_seconds == seconds


def test_a_lease_longer_than_a_second_is_refused():
    with pytest.raises(ValueError, match="SATUPINTU_RATE_LEASE_SECONDS"):
        Settings.from_env({"SATUPINTU_RATE_LEASE_SECONDS": "5"})
