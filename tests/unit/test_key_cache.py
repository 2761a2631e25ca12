"""The per-process memory of verified API keys, on a fake clock."""

from __future__ import annotations

import pytest

from core.settings import Settings
from gateway import clients
from gateway.api.keycache import KeyCache


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Store:
    """Stands in for the clients table: which keys are valid, and how often it was asked."""

    def __init__(self, *keys: str) -> None:
        self.valid = {key: clients.Client(id=f"cli_{i}", name=f"client-{key[3:]}", scopes=frozenset({"read"}))
                      for i, key in enumerate(keys)}
        self.lookups = 0

    def __call__(self, key: str) -> clients.Client | None:
        self.lookups += 1
        return self.valid.get(key)


def test_a_verified_key_is_remembered_for_its_seconds_then_looked_up_again():
    clock, store = Clock(), Store("sp_a")
    cache = KeyCache(clock=clock)
    assert cache.client("sp_a", store, seconds=5).name == "client-a"
    clock.now += 4.9
    assert cache.client("sp_a", store, seconds=5).name == "client-a"
    assert store.lookups == 1
    del store.valid["sp_a"]  # revoked by another process
    clock.now += 0.1
    assert cache.client("sp_a", store, seconds=5) is None
    assert store.lookups == 2


def test_unknown_keys_are_never_remembered():
    store = Store()
    cache = KeyCache(clock=Clock())
    for _ in range(3):
        assert cache.client("sp_guess", store, seconds=5) is None
    assert store.lookups == 3
    assert len(cache) == 0


def test_zero_seconds_asks_the_store_every_time():
    store = Store("sp_a")
    cache = KeyCache(clock=Clock())
    for _ in range(3):
        cache.client("sp_a", store, seconds=0)
    assert store.lookups == 3


def test_a_revocation_made_in_this_process_forgets_every_remembered_key(monkeypatch):
    store = Store("sp_a")
    cache = KeyCache(clock=Clock())
    cache.client("sp_a", store, seconds=60)
    monkeypatch.setattr(clients, "_changes", clients.changes() + 1)  # what revoke() and rotate() do
    cache.client("sp_a", store, seconds=60)
    assert store.lookups == 2


def test_the_oldest_key_goes_when_the_cache_is_full():
    store = Store("sp_a", "sp_b", "sp_c")
    cache = KeyCache(size=2, clock=Clock())
    for key in ("sp_a", "sp_b", "sp_c"):
        cache.client(key, store, seconds=60)
    assert len(cache) == 2
    cache.client("sp_c", store, seconds=60)
    cache.client("sp_b", store, seconds=60)
    assert store.lookups == 3  # b and c remembered
    cache.client("sp_a", store, seconds=60)
    assert store.lookups == 4  # a was the oldest


def test_the_key_itself_is_not_kept_only_its_hash():
    cache = KeyCache(clock=Clock())
    cache.client("sp_secret", Store("sp_secret"), seconds=60)
    assert "sp_secret" not in repr(cache._entries)
    assert clients.hash_key("sp_secret") in cache._entries


@pytest.mark.parametrize("value, seconds", [(None, 5.0), ("0", 0.0), ("2.5", 2.5)])
def test_the_setting_reads_seconds(value, seconds):
    env = {} if value is None else {"SATUPINTU_KEY_CACHE_SECONDS": value}
    assert Settings.from_env(env).key_cache_seconds == seconds


@pytest.mark.parametrize("value", ["-1", "soon", "nan", "3601"])
def test_a_bad_setting_is_refused_with_its_name(value):
    with pytest.raises(ValueError, match="SATUPINTU_KEY_CACHE_SECONDS"):
        Settings.from_env({"SATUPINTU_KEY_CACHE_SECONDS": value})
