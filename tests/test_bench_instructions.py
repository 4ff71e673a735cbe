"""``python -m benchmarks --instructions --quick`` still runs under callgrind and prints
every row (figures not checked: counts are for benchmarks/, never for tests)."""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import pytest
from helpers import run_benchmark

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # valgrind: minutes, not seconds
ROOT = Path(__file__).resolve().parents[1]


def test_quick_instruction_count_prints_every_row() -> None:
    if shutil.which("valgrind") is None:
        reason = "valgrind is not installed (apt-get install valgrind)"
        if os.environ.get("PLURALITY_REQUIRE_VALGRIND"):
            pytest.fail(f"valgrind is required here (PLURALITY_REQUIRE_VALGRIND): {reason}")
        pytest.skip(reason)
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks.app import ROWS
    finally:
        sys.path.remove(str(ROOT))
    done = run_benchmark("benchmarks", "--instructions", "--quick", timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    stores = ["cachelib"] + (["redis"] if shutil.which("redis-server") else [])
    for store in stores:
        for _, label in ROWS:
            row = [line for line in lines if line.startswith(f"{store:9} {label} ")]
            assert len(row) == 1, (store, label, done.stdout)
            count, ratio, over = row[0][len(f"{store:9} {label}") :].split()
            assert re.fullmatch(r"[0-9]+", count) and int(count) > 10_000, row  # a request is >10k instructions
            assert float(ratio) > 0 and re.fullmatch(r"[+-][0-9]+", over), row
    assert "flask_plurality from " + str(ROOT / "flask_plurality") in done.stdout
    assert "Traceback" not in done.stderr
