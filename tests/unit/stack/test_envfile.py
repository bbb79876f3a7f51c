"""`make env`: the Docker stack's .env gets random secrets, never a published placeholder."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest

from stack import envfile
from tests.servers import REPO_ROOT

EXAMPLE = REPO_ROOT / ".env.example"


def test_every_secret_of_the_example_is_a_placeholder_the_generator_knows() -> None:
    text = EXAMPLE.read_text()
    assert set(envfile.placeholders(text)) == set(envfile.SECRETS)


def test_a_missing_env_file_is_created_private_with_fresh_values(tmp_path: Path) -> None:
    target = tmp_path / ".env"
    assert envfile.main(["--file", str(target), "--example", str(EXAMPLE)]) == 0
    values = envfile.assignments(target.read_text())
    assert envfile.placeholders(target.read_text()) == []
    assert set(envfile.SECRETS) <= set(values)
    assert len({values[name] for name in envfile.SECRETS}) == len(envfile.SECRETS), "all distinct"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert values["PREFECT_API_AUTH_STRING"].startswith("admin:")
    assert len(base64.urlsafe_b64decode(values["PREFECT_SERVER_ENCRYPTION_KEY"])) == 32
    assert values["BIND_ADDRESS"] == "127.0.0.1", "the non-secret settings are copied as they are"


def test_a_second_run_changes_nothing_and_an_old_file_only_gains_what_it_lacks(
    tmp_path: Path,
) -> None:
    target = tmp_path / ".env"
    target.write_text("POSTGRES_PASSWORD=mine\nMINIO_ROOT_PASSWORD=also-mine\n")
    assert envfile.main(["--file", str(target), "--example", str(EXAMPLE)]) == 0
    values = envfile.assignments(target.read_text())
    assert (values["POSTGRES_PASSWORD"], values["MINIO_ROOT_PASSWORD"]) == ("mine", "also-mine")
    assert set(envfile.SECRETS) <= set(values)
    before = target.read_text()
    assert envfile.main(["--file", str(target), "--example", str(EXAMPLE)]) == 0
    assert target.read_text() == before


@pytest.mark.parametrize("line", ["MLFLOW_ADMIN_PASSWORD=change-me", 'X="change-me-please"'])
def test_a_placeholder_left_in_the_file_is_refused_by_name(
    tmp_path: Path, line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / ".env"
    target.write_text(line + "\n")
    assert envfile.main(["--file", str(target), "--example", str(EXAMPLE)]) == 1
    name = line.split("=")[0]
    assert name in capsys.readouterr().err
    assert target.read_text().startswith(line), "a value is never overwritten"
