"""``python -m benchmarks [--quick]``: print every benchmark's table.

First the per-request table (``benchmarks.per_request``), then each other
``benchmarks/bench_*.py`` that has a ``run() -> str`` (given ``quick=`` when it takes it).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import pkgutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from . import per_request


def _others() -> list[tuple[str, Callable[..., str]]]:
    found = []
    for module in sorted(pkgutil.iter_modules([str(Path(__file__).parent)]), key=lambda m: m.name):
        if module.name.startswith("bench_"):
            run = getattr(importlib.import_module(f"{__package__}.{module.name}"), "run", None)
            if callable(run):
                found.append((module.name, run))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: a few requests per row, figures meaningless")
    args = parser.parse_args(argv)
    started = time.monotonic()
    print("== per_request ==", flush=True)
    print(per_request.run(quick=args.quick), flush=True)
    for name, run in _others():
        print(f"\n== {name} ==", flush=True)
        takes_quick = "quick" in inspect.signature(run).parameters
        print(run(quick=args.quick) if takes_quick else run(), flush=True)
    print(f"\n(all benchmarks: {time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
