"""A small but complete app that trusts Plurality logins: the code to copy.

Run it from the repository root::

    python -m examples.app            # http://127.0.0.1:5000 (PORT=... or --port ... to change)

Without ``PLURALITY_CLIENT_ID`` / ``PLURALITY_CLIENT_SECRET`` (environment or
``examples/.env``) it runs in **demo mode**: logins are minted and checked by the
built-in stand-in, so the whole flow works with no account and no network. With
them it embeds Plurality's real widget and checks every login with Plurality, and
in both modes it may run in any number of processes::

    gunicorn -w 3 "examples.app:create_app()"

Sessions are files in the instance folder (``examples/instance/``), and in demo mode
so are the stand-in's signing key and demo users: every process serving that folder
accepts the others' logins, and a restart logs nobody out.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask import Flask, Response, jsonify, render_template, request

from flask_plurality import (
    SETTINGS,
    ConfigurationError,
    Plurality,
    SessionInfo,
    current_profile,
    fake_mode,
    plurality_required,
    safe_next,
)

from .members import init_members

HERE = Path(__file__).resolve().parent
#: Real-mode settings; ``.env`` is git-ignored (see ``.env.example``).
ENV_FILE = HERE / ".env"

#: Pinned, integrity-checked widget build (a UMD bundle that wants React 18 as globals).
WIDGET_SCRIPTS = (
    (
        "https://unpkg.com/react@18.3.1/umd/react.production.min.js",
        "sha384-DGyLxAyjq0f9SPpVevD6IgztCFlnMF6oW/XQGmfe+IsZ8TqEiDrcHkMLKI6fiB/Z",
    ),
    (
        "https://unpkg.com/react-dom@18.3.1/umd/react-dom.production.min.js",
        "sha384-gTGxhz21lVGYNMcdJOyq01Edg0jhn/c22nsx0kyqP0TxaV5WVdsSH1fSDUf5YJj1",
    ),
    (
        "https://unpkg.com/@plurality-network/smart-profile-wallet@2.19.0/dist/index.umd.js",
        "sha384-0Md1N2s4+Ju9ln330O6B7vL/2ocLTyCGPjut51RMlWBBJMIiAPml5teno9AFPnK8",
    ),
)

#: Where a real client app is made, and its page origins registered.
DASHBOARD = "https://developer.plurality.network"

log = logging.getLogger("examples.app")
plurality = Plurality()


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=value`` lines (``#`` comments, ``export``, quotes allowed): enough for a
    ``.env`` without adding python-dotenv."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        key, value = key.strip(), value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        values[key] = value
    return values


def _plurality_settings(env_file: Path | None) -> dict[str, Any]:
    """``PLURALITY_*`` keys from ``env_file``, overridden by the environment. Values are
    read as JSON when they parse (``PLURALITY_REVALIDATE=60``), like ``from_prefixed_env``."""
    raw = read_env_file(env_file) if env_file is not None else {}
    raw.update(os.environ)
    settings: dict[str, Any] = {}
    for key in SETTINGS:
        if raw.get(key):
            try:
                settings[key] = json.loads(raw[key])
            except ValueError:
                settings[key] = raw[key]
    for key in ("PLURALITY_CLIENT_ID", "PLURALITY_CLIENT_SECRET"):
        if key in settings:
            settings[key] = str(raw[key])  # an id may look like a number; keep it a string
    return settings


def create_app(
    config: Mapping[str, Any] | None = None,
    *,
    env_file: Path | None = ENV_FILE,
    instance_path: str | None = None,
) -> Flask:
    """The app factory. ``config`` wins over the environment and ``env_file``."""
    # Sessions (and the demo's stand-in) live in examples/instance/ however the app is started.
    app = Flask(__name__, instance_path=instance_path or str(HERE / "instance"))
    app.config["PLURALITY_LOGIN_URL"] = "/"  # browsers that are not signed in land on the home page
    app.config.update(_plurality_settings(env_file))
    app.config.from_prefixed_env()  # FLASK_PLURALITY_CLIENT_SECRET=... works too
    app.config.update(config or {})

    demo = _demo_mode(app.config)
    if demo:
        # Not in debug, so insist: PLURALITY_FAKE="force". The stand-in keeps its signing
        # key and demo users in the instance folder, beside the sessions (files there, as
        # in real mode): gunicorn's workers share them, and a restart keeps the logins.
        app.config["PLURALITY_FAKE"] = "force"
    else:
        app.config["PLURALITY_FAKE"] = False
    plurality.init_app(app)
    init_members(app, plurality)  # its own users (SQLite), and a members-only page
    if demo:
        app.logger.warning(
            "DEMO MODE: logins are minted and checked by a local stand-in, not by Plurality. "
            "For real logins: register this page's origin for your client app at %s, set "
            "PLURALITY_CLIENT_ID and PLURALITY_CLIENT_SECRET (environment or %s), and restart.",
            DASHBOARD,
            ENV_FILE,
        )
    app.config["DEMO_MODE"] = plurality.demo_mode(app)
    _register_routes(app)
    return app


def _demo_mode(app_config: Mapping[str, Any]) -> bool:
    """Demo mode exactly when no credentials are set. ``PLURALITY_FAKE`` is read with the
    library's own parser (``"False"``, ``"off"``, ``"no"`` are off), so it can never turn
    demo mode on next to real credentials, where anyone could mint a login."""
    credentials = bool(app_config.get("PLURALITY_CLIENT_ID") or app_config.get("PLURALITY_CLIENT_SECRET"))
    asked = fake_mode(app_config.get("PLURALITY_FAKE", False))  # ConfigurationError for "maybe"
    if credentials and asked:
        raise ConfigurationError(
            f"PLURALITY_FAKE={app_config['PLURALITY_FAKE']!r} asks for demo mode, but Plurality credentials "
            "are set: the sample runs demo mode only without them. Unset PLURALITY_FAKE for real logins, "
            "or unset PLURALITY_CLIENT_ID and PLURALITY_CLIENT_SECRET for the demo."
        )
    if credentials:
        return False
    # PLURALITY_FAKE=false without credentials: real mode was asked for, and init_app says what is missing.
    return bool(asked) or "PLURALITY_FAKE" not in app_config


def _register_routes(app: Flask) -> None:
    @app.context_processor
    def page_globals() -> dict[str, Any]:
        return {
            "demo": app.config["DEMO_MODE"],
            "widget_scripts": () if app.config["DEMO_MODE"] else WIDGET_SCRIPTS,
            # The client id is public (the widget needs it); the secret never leaves the server.
            "client_id": None if app.config["DEMO_MODE"] else app.config["PLURALITY_CLIENT_ID"],
            "profile": current_profile,
            "dashboard": DASHBOARD,
            "env_file": "examples/.env",
        }

    @app.after_request
    def harden(response: Response) -> Response:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if response.mimetype == "text/html":
            response.headers.setdefault("Cache-Control", "no-store")  # pages show personal data
        return response

    @app.get("/")
    def home() -> str:
        """Public. ``?next=`` is where @plurality_required sent the browser from."""
        asked = request.args.get("next")
        # The library's own check: only a path on this site, whatever the encoding
        # (tabs, newlines, backslashes, percent-encoded or not, are refused).
        return render_template("index.html", next_path=safe_next(asked) or "/profile", asked=bool(asked))

    @app.get("/profile")
    @plurality_required
    def profile() -> str:
        expires_at = current_profile.expires_at
        return render_template(
            "profile.html",
            expires=_format_expiry(expires_at) if expires_at is not None else "unknown",
        )

    @app.get("/devices")
    @plurality_required
    def devices() -> str:
        """ "Where am I signed in?": this user's sessions, this one marked."""
        listed = plurality.sessions_of(current_profile.id)
        return render_template("devices.html", devices=[_device(info) for info in listed])

    @app.get("/api/me")
    @plurality_required(bearer=True)
    def api_me() -> Response:
        """What a JavaScript front end or a mobile app would call (also with a bearer token)."""
        return jsonify(profile=current_profile.to_json(), server_time=int(time.time()))

    @app.post("/api/transfer")
    @plurality_required(revalidate=True)
    def api_transfer() -> Response | tuple[Response, int]:
        """A sensitive action: Plurality is asked again, right now, before it runs."""
        if not request.is_json:  # a cross-site HTML form cannot send JSON
            return jsonify(error="invalid_request", message="Send JSON."), 415
        return jsonify(
            done=True,
            message="Plurality confirmed the login just now; the transfer would run here.",
            id=current_profile.id,
        )


def _device(info: SessionInfo) -> dict[str, Any]:
    """A session as the devices page shows it."""
    return {
        "handle": info.handle,
        "current": info.current,
        "browser": _browser_name(info.user_agent),
        "ip": info.ip,
        "created": datetime.fromtimestamp(info.created_at, UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "last_seen": datetime.fromtimestamp(info.last_seen, UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _browser_name(agent: str | None) -> str:
    """A short name for a User-Agent ("Chrome on Linux"): enough to tell devices apart."""
    if not agent:
        return "Unknown browser"
    browser = next((name for name in ("Edg", "Firefox", "Chrome", "Safari") if name in agent), "A browser")
    system = next(
        (
            name
            for key, name in (
                ("Android", "Android"),
                ("iPhone", "iPhone"),
                ("Windows", "Windows"),
                ("Mac OS", "macOS"),
                ("Linux", "Linux"),
            )
            if key in agent
        ),
        None,
    )
    browser = {"Edg": "Edge"}.get(browser, browser)
    return f"{browser} on {system}" if system else browser


def _format_expiry(expires_at: int) -> str:
    when = datetime.fromtimestamp(expires_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
    minutes = max(0, int(expires_at - time.time()) // 60)
    return f"{when} (in {minutes // 60} h {minutes % 60:02d} min)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m examples.app", description="Serve the flask-plurality sample app.")
    parser.add_argument("--host", default="127.0.0.1", help="default: %(default)s")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "5000")), help="default: $PORT or 5000")
    parser.add_argument("--instance-path", help="sessions and the demo's stand-in; default: examples/instance")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        app = create_app(instance_path=args.instance_path)
    except ConfigurationError as exc:
        sys.exit(f"error: {exc}")  # one line, not a traceback
    busy = _port_in_use(args.host, args.port)
    if busy:
        sys.exit(f"error: {busy}")
    log.info("Open http://%s:%d/ (%s mode)", args.host, args.port, "demo" if app.config["DEMO_MODE"] else "real")
    # A process manager's or an IDE's stop (SIGTERM), or the terminal closing (SIGHUP),
    # stops the server as Ctrl-C does.
    _on_stop_signals(_interrupt)
    # Werkzeug's server is fine for trying this out; deploy with gunicorn "examples.app:create_app()".
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C stops the server: no traceback
        app.run(host=args.host, port=args.port, debug=False, load_dotenv=False)
    log.info("Stopped.")


def _on_stop_signals(handler: Any) -> None:
    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), handler)


def _interrupt(signum: int, frame: object) -> None:
    """Stop once: the same signal again (to the process group, and passed on by dev.py
    too) must not interrupt the shutdown itself."""
    _on_stop_signals(signal.SIG_IGN)
    raise KeyboardInterrupt


def _port_in_use(host: str, port: int) -> str | None:
    """What to do when something already listens on ``port`` (often an earlier demo
    still running); ``None`` when the server can have it."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Werkzeug's server binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                return None  # Werkzeug's own error says it better
            return (
                f"port {port} is in use, often by an earlier `python3 dev.py demo` still running: stop it "
                f"(Ctrl-C in its terminal; `lsof -i :{port}` names its PID), or start this one on another port: "
                f"python3 dev.py demo --port {port + 1}"
            )
    return None


if __name__ == "__main__":
    main()
