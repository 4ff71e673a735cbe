"""``flask plurality ...`` commands."""

from __future__ import annotations

from flask.cli import AppGroup

plurality_cli = AppGroup("plurality", help="Plurality login tools.")
