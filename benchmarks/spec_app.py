"""The conformance suite's app (``tests/backend_app.py``) for gunicorn: ``$BACKEND_APP``
(JSON: ``spec``, ``plurality``, ``instance_path``) says which store it uses, so every
worker builds the very same app."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from backend_app import build

_options = json.loads(os.environ["BACKEND_APP"])
app = build(_options["spec"], _options["plurality"], _options["instance_path"])
