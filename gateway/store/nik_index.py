"""Filling ``application_niks`` for applications already stored, a batch at a time.

Used twice: by migration 4, to back-fill the applications stored before the table existed,
and by ``satupintu db rehash-niks``, to rebuild every row under a new
``SATUPINTU_NIK_HASH_KEY``.  Applications are read in id order from where the last batch
stopped (keyset pagination: no ``OFFSET`` that gets slower with every page, nothing held
but one batch), and each batch is one short transaction that replaces the rows of its
applications -- so gateways keep writing in between, and running it again, or after an
interruption, only writes the same rows again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import Engine, delete, insert, select

from . import tables as t

BATCH = 1000  # applications per transaction


def rebuild(engine: Engine, hashes: Callable[[Any], Iterable[str]], *, batch: int = BATCH,
            progress: Callable[[int], None] | None = None) -> int:
    """Replace the NIK rows of every stored application with ``hashes(data)``; returns how many
    applications were read.  ``progress`` is told the running count after each batch."""
    apps, niks = t.applications, t.application_niks
    after, done = "", 0
    while True:
        with engine.begin() as conn:
            page = conn.execute(select(apps.c.id, apps.c.data).where(apps.c.id > after)
                                .order_by(apps.c.id).limit(batch)).all()
            if not page:
                return done
            ids = [row.id for row in page]
            conn.execute(delete(niks).where(niks.c.application_id.in_(ids)))
            rows = [{"application_id": row.id, "nik_hash": h} for row in page for h in hashes(row.data)]
            if rows:
                conn.execute(insert(niks), rows)
        after, done = ids[-1], done + len(page)
        if progress is not None:
            progress(done)
