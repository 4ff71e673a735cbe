"""A command-line client of the sample app's JSON API: no browser, no cookie, a bearer token.

    python -m examples.app &                          # the sample app, in demo mode
    python -m examples.api_client --email cli@example.com

A mobile app, a CLI or a frontend on another site gets the widget's ``pluralityToken``
and sends it as ``Authorization: Bearer <token>`` with every call (the route says
``@plurality_required(bearer=True)``). Here the token comes from the demo stand-in
(``POST /plurality/fake/token``); with a real app, pass the widget's token with
``--token`` (or ``PLURALITY_TOKEN`` in the environment, which keeps it out of ``ps``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import requests

TIMEOUT = 10.0


def demo_token(base: str, email: str | None) -> str:
    """A token minted by the app's stand-in: only an app in demo mode serves this route."""
    response = requests.post(f"{base}/plurality/fake/token", json={"email": email} if email else {}, timeout=TIMEOUT)
    if response.status_code == 404:
        raise SystemExit(f"{base} is not in demo mode: pass the widget's token with --token or PLURALITY_TOKEN.")
    response.raise_for_status()
    token = response.json().get("pluralityToken")
    if not isinstance(token, str):
        raise SystemExit(f"{base} answered no pluralityToken")
    return token


def call(base: str, path: str, token: str) -> requests.Response:
    return requests.get(f"{base}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.api_client", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--url",
        default=os.environ.get("SAMPLE_URL", "http://127.0.0.1:5000"),
        help="the sample app (default: $SAMPLE_URL or %(default)s)",
    )
    parser.add_argument("--email", help="demo mode: the email of the user to mint a token for")
    parser.add_argument("--token", default=os.environ.get("PLURALITY_TOKEN"), help="a pluralityToken to send")
    parser.add_argument("--path", default="/api/me", help="the API route to call (default: %(default)s)")
    args = parser.parse_args(argv)
    base = args.url.rstrip("/")
    try:
        token = args.token or demo_token(base, args.email)
        response = call(base, args.path, token)
    except requests.RequestException as exc:
        print(f"error: could not reach {base}: {type(exc).__name__}", file=sys.stderr)
        return 2
    print(f"GET {args.path} -> {response.status_code}")
    challenge = response.headers.get("WWW-Authenticate")
    if challenge:
        print(f"WWW-Authenticate: {challenge}")
    try:
        print(json.dumps(response.json(), indent=2, sort_keys=True))
    except ValueError:
        print(response.text[:2000])
    return 0 if response.ok else 1


if __name__ == "__main__":
    sys.exit(main())
