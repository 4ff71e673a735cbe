"""Client ids and secrets as Plurality reads them (docs/plurality-api.rst, "Client id and secret"): ids are
UUIDs, Basic credentials are split at ``:``. ``init_app`` warns about an id that is not
a UUID and refuses one containing ``:``; ``flask plurality check`` names both, and the
``:`` in a secret when Plurality refuses it; the stand-in cuts a secret at ``:`` as
Plurality does."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from flask import Flask
from helpers import AppFactory, build_app

from flask_plurality import ConfigurationError
from flask_plurality.cli import ExitCode
from flask_plurality.testing import FakePlurality

UUID = "3f1c2a9e-8b7d-4c6e-9f0a-1b2c3d4e5f60"


def check(app: Flask, *args: str) -> Any:
    return app.test_cli_runner().invoke(args=["plurality", "check", *args])


def test_a_uuid_client_id_passes_silently(make_app: AppFactory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="flask_plurality")
    app = make_app(PLURALITY_CLIENT_ID=UUID)
    assert "PLURALITY_CLIENT_ID" not in caplog.text
    result = check(app)
    assert "PLURALITY_CLIENT_ID" not in result.output


def test_a_client_id_that_is_not_a_uuid_is_a_warning_at_init_app_and_in_check(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="flask_plurality")
    app = make_app(PLURALITY_CLIENT_ID="my-app")
    (record,) = [r for r in caplog.records if "PLURALITY_CLIENT_ID" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert "'my-app' is not a UUID" in record.getMessage()
    result = check(app)
    assert "warning: PLURALITY_CLIENT_ID 'my-app' is not a UUID" in result.output


@pytest.mark.parametrize("client_id", ["app:one", f"{UUID}:", f"urn:uuid:{UUID}"])
def test_a_client_id_with_a_colon_is_refused_at_init_app(fake: FakePlurality, tmp_path: Any, client_id: str) -> None:
    with pytest.raises(ConfigurationError, match="contains ':'") as refused:
        build_app(fake, str(tmp_path), PLURALITY_CLIENT_ID=client_id)
    assert "PLURALITY_CLIENT_ID" in str(refused.value)
    assert fake.client_secret not in str(refused.value)


def test_check_names_a_colon_that_got_into_the_client_id_after_init_app(
    make_app: AppFactory, fake: FakePlurality
) -> None:
    app = make_app()
    app.config["PLURALITY_CLIENT_ID"] = "app:one"
    result = check(app, "--token", fake.issue_token())
    assert result.exit_code == ExitCode.CREDENTIALS_REJECTED
    assert "warning: PLURALITY_CLIENT_ID 'app:one' contains ':'" in result.output
    assert "can never authenticate" in result.output.splitlines()[-1]


def test_fake_mode_brings_a_uuid_id_and_no_warning(tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    from flask_plurality import Plurality

    caplog.set_level(logging.WARNING, logger="flask_plurality")
    app = Flask("demo", instance_path=str(tmp_path))
    app.config.update(TESTING=True, PLURALITY_FAKE=True, PLURALITY_CLIENT_ID="ignored-in-fake-mode")
    Plurality(app)
    assert app.config["PLURALITY_CLIENT_ID"] == FakePlurality.DEMO_CLIENT_ID
    assert "is not a UUID" not in caplog.text


def test_a_secret_with_a_colon_is_cut_by_plurality_and_check_says_so(tmp_path: Any) -> None:
    """Plurality keeps what comes before the first ':' of the secret: it never matches."""
    secret = "first-part:second-part"
    with FakePlurality(client_id=UUID, client_secret=secret) as fake:
        app = build_app(fake, str(tmp_path))
        result = check(app, "--token", fake.issue_token())
        assert [c.auth_ok for c in fake.calls] == [False]  # the stand-in got "first-part"
    assert result.exit_code == ExitCode.CREDENTIALS_REJECTED
    last = result.output.splitlines()[-1]
    assert last.startswith("credentials rejected: Invalid Client Secret; PLURALITY_CLIENT_SECRET contains ':'")
    assert secret not in result.output and "second-part" not in result.output


def test_no_hint_about_the_secret_when_it_has_no_colon(make_app: AppFactory, fake: FakePlurality) -> None:
    result = check(make_app(PLURALITY_CLIENT_SECRET="wrong-secret"), "--token", fake.issue_token())
    assert result.output.splitlines()[-1] == "credentials rejected: Invalid Client Secret"
