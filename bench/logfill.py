"""A deterministic synthetic log for the benchmarks: power-like records of about 1 KB, appended through the
store API as real imports (one transaction per import)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

from events import EntityAdded, EntityChanged, canonical_bytes, content_hash, diff
from store import imports, locks, log
from store.connection import Database
from store.imports import ImportMeta

CHUNK = 10_000


def power(i: int, rng: random.Random, powerset: str) -> dict[str, Any]:
    """A record shaped like a real power (a few effects, real field names), about 1 KB of canonical JSON."""
    return {
        "FullName": f"{powerset}.Power_{i:07d}",
        "DisplayName": f"Power {i}",
        "FullSetName": powerset,
        "Level": rng.randint(1, 50),
        "Accuracy": round(rng.uniform(0.5, 1.5), 3),
        "EndCost": round(rng.uniform(1, 20), 4),
        "RechargeTime": round(rng.uniform(1, 600), 2),
        "CastTime": round(rng.uniform(0.5, 3), 3),
        "Range": float(rng.choice((0, 40, 80))),
        "BoostsAllowed": ["Accuracy_Boost", "Damage_Boost", "EnduranceDiscount_Boost", "Recharge_Boost"],
        "DescLong": "x" * rng.randint(120, 180),
        "Effects": [
            {
                "EffectId": rng.choice(("Damage", "Ones", "Mez")),
                "EffectType": rng.choice((3, 3, 7)),
                "Scale": round(rng.uniform(0.1, 2), 5),
                "Mag": round(rng.random(), 6),
                "ToWho": 1,
                "Aspect": 2,
                "ModifierTable": "Ranged_Damage",
            }
            for _ in range(3)
        ],
    }


def records(n: int, seed: int = 42) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(kind, key, record): archetypes, then sets of 100 powers each (a powerset before its powers)."""
    rng = random.Random(seed)
    for a in range(20):
        yield (
            "archetype",
            f"Class_Bench_{a}",
            {"ClassName": f"Class_Bench_{a}", "DisplayName": f"Bench {a}", "Hitpoints": 1000 + a},
        )
    made = 20
    s = 0
    while made < n:
        name = f"Bench_Group.Set_{s:05d}"
        yield (
            "powerset",
            name,
            {"FullName": name, "DisplayName": f"Set {s}", "SetType": 1, "ATClass": f"Class_Bench_{s % 20}"},
        )
        made += 1
        for i in range(min(100, n - made)):
            rec = power(s * 100 + i, rng, name)
            yield "power", rec["FullName"], rec
            made += 1
        s += 1


def added(n: int, seed: int = 42) -> Iterator[log.Pending]:
    """The first import's events: every record of `records`, added."""
    for kind, key, rec in records(n, seed):
        ev = EntityAdded(kind=kind, key=key, record=rec, hash=content_hash(rec))
        yield log.Pending(ev, 0, canonical_bytes(rec))


def chunks(events: Iterator[log.Pending]) -> Iterator[list[log.Pending]]:
    """Lists of CHUNK events: what one `log.append` call takes."""
    batch: list[log.Pending] = []
    for event in events:
        batch.append(event)
        if len(batch) >= CHUNK:
            yield batch
            batch = []
    if batch:
        yield batch


def _commit(db: Database, batches: Iterator[list[log.Pending]], label: str) -> None:
    with db.connect() as conn:
        conn.execute("BEGIN")
        locks.acquire(conn, locks.LOG)
        import_id = imports.begin(conn, ImportMeta(source_path="bench", label=label))
        appended = None
        for batch in batches:
            appended = log.append(conn, import_id, batch) or appended
        imports.complete(conn, import_id, None, {}, [], appended, str(log.head(conn)))
        conn.execute("COMMIT")


def fill(db: Database, n: int, change_fraction: float = 0.01, seed: int = 42) -> int:
    """Import n records, then a second import changing `change_fraction` of the powers; returns events."""
    _commit(db, chunks(added(n, seed)), "bench 1")
    rng = random.Random(seed + 1)

    def changed() -> Iterator[log.Pending]:
        for kind, key, rec in records(n, seed):
            if kind != "power" or rng.random() >= change_fraction:
                continue
            new = dict(rec, RechargeTime=rec["RechargeTime"] + 1, Effects=rec["Effects"][:2])
            ev = EntityChanged(
                kind=kind,
                key=key,
                patch=diff(rec, new),
                previous_hash=content_hash(rec),
                hash=content_hash(new),
            )
            yield log.Pending(ev, 1, canonical_bytes(new))

    _commit(db, chunks(changed()), "bench 2")
    with db.connect() as conn:
        row = conn.execute("SELECT count(*) FROM events").fetchone()
    return int(row[0]) if row else 0
