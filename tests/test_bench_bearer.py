"""``benchmarks/bearer.py``'s rows answer as they should (the instruction counts themselves
are for ``python -m benchmarks.bearer``, never for tests): every row 200, the bearer row
without a cookie and without calling Plurality."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from flask_plurality.testing import FakePlurality

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import bearer  # noqa: E402


@pytest.mark.parametrize("row", [row for row, _ in bearer.ROWS])
def test_every_row_answers_200_without_asking_plurality(
    row: str, fake: FakePlurality, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in bearer._prepare("cachelib", fake, str(tmp_path), "").items():
        monkeypatch.setenv(key, value)
    calls = len(fake.calls)
    bearer.worker(row, 5)
    assert len(fake.calls) == calls
