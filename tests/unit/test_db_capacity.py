"""How many connections a copy needs on each side, against each side's limits (pure logic; the
counts themselves are checked against real clusters in tests/integration/test_db_copy.py)."""

from __future__ import annotations

from migrate.db.capacity import Limits, check, largest_jobs, needed


def limits(**kw: object) -> Limits:
    base: dict[str, object] = dict(role="app", superuser=False, role_limit=-1, role_in_use=0, database="db",
                                   database_limit=-1, database_in_use=0, max_connections=100, reserved=3, in_use=10)
    base.update(kw)
    return Limits(**base)  # type: ignore[arg-type]


def test_connections_per_mode() -> None:
    assert needed("parallel", 4, True) == (5, 7)
    assert needed("parallel", 4, False) == (5, 7)
    assert needed("stream", 4, True) == (5, 6)
    assert needed("stream", 1, False) == (1, 3)


def test_the_tightest_limit_decides() -> None:
    assert limits().free() == (87, "the server has max_connections 100 (10 in use by other sessions,"
                                    " 3 reserved for more privileged roles)")
    free, why = limits(role_limit=5, role_in_use=2, database_limit=6).free()
    assert free == 3 and "role app has CONNECTION LIMIT 5 (2 in use" in why
    free, why = limits(role_limit=5, database_limit=2, database_in_use=4).free()
    assert free == 0 and "database db has CONNECTION LIMIT 2" in why
    # Superusers are held by neither CONNECTION LIMIT, and may use the reserved slots.
    assert limits(superuser=True, role_limit=1, database_limit=1, reserved=0).free()[0] == 90


def test_a_blocker_names_the_largest_jobs_that_fits_both_sides() -> None:
    assert largest_jobs("parallel", True, 3, 100) == 2
    assert largest_jobs("parallel", True, 100, 5) == 2
    assert largest_jobs("parallel", True, 1, 100) == 0
    facts, blockers = check("parallel", 8, True, limits(role_limit=4), limits(database_limit=9))
    assert len(blockers) == 2 and all("use --jobs 3 or fewer" in b for b in blockers), blockers
    assert facts["source connections"].startswith("up to 9 at once; 4 may be opened")
    _, blockers = check("parallel", 1, True, limits(role_limit=1), limits())
    assert blockers == ["the copy would open up to 2 connections to the source at once (--jobs 1), but only 1 may"
                        " be opened: role app has CONNECTION LIMIT 1 (0 in use by other sessions); nothing was"
                        " written — even --jobs 1 does not fit: end other sessions, or raise the limit"]
    assert check("parallel", 2, True, limits(role_limit=3), limits(database_limit=5))[1] == []
