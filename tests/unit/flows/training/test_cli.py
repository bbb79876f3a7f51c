"""The training command's arguments, its choice of engine, and what it imports before a run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from flows.training import cli as training_cli

REPO = Path(__file__).resolve().parents[3]


def test_a_bad_pair_exits_2_with_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        training_cli.parse_args(["--train-month", "2023-02", "--val-month", "2023-02"])
    assert raised.value.code == 2
    assert "must come after the training month" in capsys.readouterr().err


def test_s3_cannot_run_without_prefect(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--train-month", "2023-01", "--val-month", "2023-02", "--data-source", "s3"]
    with pytest.raises(SystemExit) as raised:
        training_cli.parse_args([*argv, "--engine", "in-process"])
    assert raised.value.code == 2
    assert "S3Bucket block" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("engine", "data_source", "environ", "expected"),
    [
        ("auto", "local", {}, "in-process"),
        ("auto", "local", {"PREFECT_API_URL": ""}, "in-process"),
        ("auto", "local", {"PREFECT_API_URL": "http://127.0.0.1:4200/api"}, "prefect"),
        ("auto", "s3", {}, "prefect"),
        ("prefect", "local", {}, "prefect"),
        ("in-process", "local", {"PREFECT_API_URL": "http://127.0.0.1:4200/api"}, "in-process"),
    ],
)
def test_the_engine(engine: str, data_source: str, environ: dict[str, str], expected: str) -> None:
    assert training_cli.choose_engine(engine, data_source, environ) == expected


def test_quiet_defaults_never_override_the_user() -> None:
    environ = {"DO_NOT_TRACK": "false", "OMP_WAIT_POLICY": "ACTIVE"}
    training_cli.quiet_defaults(environ)
    assert environ == {
        "DO_NOT_TRACK": "false",
        "OMP_WAIT_POLICY": "ACTIVE",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }


def test_the_command_refuses_a_bad_pair_before_importing_anything_heavy() -> None:
    # A subprocess: the test session has imported these libraries already.
    probe = (
        "import sys, runpy\n"
        "sys.argv = ['flows.training', '--train-month', '2023-03', '--val-month', '2023-02']\n"
        "try:\n"
        "    runpy.run_module('flows.training', run_name='__main__')\n"
        "except SystemExit as exit:\n"
        "    heavy = sorted({'prefect', 'mlflow', 'xgboost', 'pandas'} & set(sys.modules))\n"
        "    print(exit.code, heavy)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.stdout.strip() == "2 []", done.stderr
    assert "must come after the training month (2023-03)" in done.stderr


@pytest.mark.parametrize(
    ("argv", "window"),
    [
        (["--train-from", "2022-01", "--train-to", "2022-03"], ("2022-01", "2022-03")),
        (["--train-month", "2023-01"], ("2023-01", "2023-01")),
        (["--train-to", "2022-12"], ("2022-12", "2022-12")),
    ],
)
def test_the_training_window(argv: list[str], window: tuple[str, str]) -> None:
    args = training_cli.parse_args([*argv, "--val-month", "2023-02"])
    assert (args.train_from, args.train_to) == window


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--train-month", "2023-01", "--train-from", "2022-01"], "not both"),
        ([], "give --train-month, or --train-from and --train-to"),
        (["--train-from", "2022-03", "--train-to", "2022-01"], "before it starts"),
    ],
)
def test_a_bad_window_exits_2_with_the_reason(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        training_cli.parse_args([*argv, "--val-month", "2023-02"])
    assert exit_info.value.code == 2
    assert says in capsys.readouterr().err
