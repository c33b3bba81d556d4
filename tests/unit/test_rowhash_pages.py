"""Page (ctid) ranges tile a table exactly: every page in one range, the last one open-ended."""

from __future__ import annotations

import itertools
import re

import pytest

from migrate.db.rowhash import Column, Hasher, TableInfo


class _Size:
    """A connection that knows one thing: the table's size in pages."""

    def __init__(self, pages: int) -> None:
        self.pages = pages

    def execute(self, query: str, params: object = None) -> _Size:
        assert "pg_relation_size" in query
        return self

    def fetchone(self) -> tuple[int]:
        return (self.pages,)


def _bounds(pred: str) -> tuple[int | None, int | None]:
    lo = re.search(r"t\.ctid >= '\((\d+),0\)'::tid", pred)
    hi = re.search(r"t\.ctid < '\((\d+),0\)'::tid", pred)
    return (int(lo[1]) if lo else None, int(hi[1]) if hi else None)


@pytest.mark.parametrize("pages", [0, 1, 2, 9, 10, 1000, 1001])
@pytest.mark.parametrize("parts", [2, 3, 4])
def test_page_ranges_tile_the_table(pages: int, parts: int) -> None:
    col = Column("v", 25, "text", True)
    hasher = Hasher(TableInfo("s", "t", "r", (col,), (), 0, False), (col,))
    preds = hasher.page_parts(_Size(pages), parts)  # type: ignore[arg-type]
    bounds = [_bounds(p) for p in preds]
    assert 1 <= len(preds) <= parts, preds
    assert bounds[0][0] is None and bounds[-1][1] is None, preds  # from the start, to the end (and beyond)
    for (_, hi), (lo, _) in itertools.pairwise(bounds):
        assert hi is not None and hi == lo, preds  # contiguous: no page skipped, none twice
    cuts = [hi for _, hi in bounds[:-1]]
    assert cuts == sorted(set(cuts)) and all(0 < c < pages for c in cuts), preds
    if pages >= parts:  # cut every ceil(pages / parts) pages: at least two ranges
        assert len(preds) >= 2, preds
    if len(preds) == 1:
        assert preds == ["true"]
