"""Time-ordered ids (``gateway/domain/ids.py``): UUIDs of version 7, in ``.hex`` form."""

import os
import time
import uuid

from hypothesis import given
from hypothesis import strategies as st

from core.domain import ids


def test_an_id_is_a_version_7_uuid_of_now():
    before = time.time_ns() // 1_000_000
    made = ids.uuid7_hex()
    after = time.time_ns() // 1_000_000
    parsed = uuid.UUID(made)
    assert made == parsed.hex and len(made) == 32
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert before <= int(made[:12], 16) <= after


@given(pool=st.binary(min_size=16, max_size=16 * 20).filter(lambda b: len(b) % 16 == 0),
       ms=st.integers(0, 2**48 - 1))
def test_ids_from_a_pool_keep_its_random_bits_and_take_the_time(pool, ms):
    made = ids.uuid7_hexes(pool, ms)
    assert len(made) == 2 * len(pool)
    for n in range(len(pool) // 16):
        one, slot = uuid.UUID(made[32 * n:32 * n + 32]), pool[16 * n:16 * n + 16]
        assert one.version == 7 and one.variant == uuid.RFC_4122
        assert int(one.hex[:12], 16) == ms
        raw = one.bytes
        assert raw[6] & 0x0F == slot[6] & 0x0F and raw[7] == slot[7]  # rand_a
        assert raw[8] & 0x3F == slot[8] & 0x3F and raw[9:] == slot[9:]  # rand_b


def test_later_ids_sort_after_earlier_ones():
    earlier = ids.uuid7_hexes(os.urandom(16 * 50), 1_700_000_000_000)
    later = ids.uuid7_hexes(os.urandom(16 * 50), 1_700_000_000_001)
    assert max(earlier[i:i + 32] for i in range(0, len(earlier), 32)) < \
        min(later[i:i + 32] for i in range(0, len(later), 32))


def test_ids_do_not_repeat():
    made = {ids.uuid7_hex() for _ in range(20_000)}
    assert len(made) == 20_000
