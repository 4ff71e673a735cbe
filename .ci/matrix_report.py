"""pytest plugin of ``.ci/matrix.py``: each test's outcome into a JSON file, and a run of
only the tests another file names.

``MATRIX_REPORT=path``: ``{nodeid: [outcome, skip reason]}`` written at the end of the
session (outcome ``passed``, ``failed``, ``skipped`` or ``error`` for a module that could
not be collected). ``MATRIX_ONLY=path``: a JSON list of node ids; every other collected
test is deselected. The matrix runs a set's Redis tests a second time this way, one
combination at a time, on the one Redis database it was given.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

_results: dict[str, list[str]] = {}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    only = os.environ.get("MATRIX_ONLY")
    if not only:
        return
    wanted = set(json.loads(Path(only).read_text(encoding="utf-8")))
    deselected = [item for item in items if item.nodeid not in wanted]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if item.nodeid in wanted]


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed:
        _results[report.nodeid] = ["error", str(report.longrepr)[-2000:]]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.failed:
        _results[report.nodeid] = ["failed", ""]
    elif report.skipped and report.nodeid not in _results:
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        _results[report.nodeid] = ["skipped", reason]
    elif report.when == "call" and report.passed:
        _results.setdefault(report.nodeid, ["passed", ""])


def pytest_sessionfinish(session: pytest.Session) -> None:
    out = os.environ.get("MATRIX_REPORT")
    if out:
        Path(out).write_text(json.dumps(_results, indent=0), encoding="utf-8")
