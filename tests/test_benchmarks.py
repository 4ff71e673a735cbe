"""``python -m benchmarks --quick`` still runs and prints every row (figures not checked:
timings are for benchmarks/, never for tests)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def test_quick_benchmark_prints_the_whole_table() -> None:
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks.app import ROWS
    finally:
        sys.path.remove(str(ROOT))
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    stores = ["cachelib"] + (["redis"] if shutil.which("redis-server") else [])
    for store in stores:
        for _, label in ROWS:
            assert any(line.startswith(f"{store:9} {label}") for line in out.splitlines()), (store, label, out)
        for row in ("(3)", "(4)", "(4a)"):
            assert any(line.strip().startswith(f"{store:9} {row}") for line in out.splitlines()), (store, row, out)
    assert "POST /plurality/login (pooled connection)" in out
    assert "hand-written requests.get per login (new connection)" in out
    assert "cachelib FileSystemCache (pickle, file size)" in out
    assert "Traceback" not in done.stderr
