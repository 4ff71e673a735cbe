"""``python -m benchmarks [--quick] [--instructions]``: print every benchmark's table.

First the per-request table (``benchmarks.per_request``), then each other
``benchmarks/bench_*.py`` that has a ``run() -> str`` (given ``quick=`` when it takes it).
``--instructions``: instead, instructions per request counted by callgrind
(``benchmarks.instructions``), which repeat exactly where wall-clock figures swing.
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

from . import instructions, per_request


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
    parser.add_argument(
        "--instructions", action="store_true", help="instructions per request under valgrind's callgrind, instead"
    )
    parser.add_argument("--package", help="with --instructions: measure the flask_plurality of this checkout")
    parser.add_argument("--redis-url", help="with --instructions: this Redis (a database of your own)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    if args.instructions:
        print("== instructions ==", flush=True)
        print(instructions.run(quick=args.quick, package=args.package, redis_url=args.redis_url), flush=True)
        print(f"\n(instructions: {time.monotonic() - started:.0f} s)")
        return 0
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
