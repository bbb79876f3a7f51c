"""`python -m services.dask.certs`: the compose job that writes the cluster's TLS files once."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.dask.certs import main


def test_first_run_writes_later_runs_keep(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    assert main(["--into", str(tmp_path)]) == 0
    key = (tmp_path / "key.pem").read_bytes()
    assert main(["--into", str(tmp_path)]) == 0
    assert (tmp_path / "key.pem").read_bytes() == key
    assert "written" in caplog.text and "kept" in caplog.text
    assert key.decode().splitlines()[1] not in caplog.text  # never a line of the key


def test_broken_kept_files_fail_the_job_with_the_reason_not_the_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    main(["--into", str(tmp_path / "a")])
    main(["--into", str(tmp_path / "b")])
    (tmp_path / "a" / "cert.pem").write_bytes((tmp_path / "b" / "cert.pem").read_bytes())
    assert main(["--into", str(tmp_path / "a")]) == 1
    assert "is not the key of" in caplog.text
    key = (tmp_path / "a" / "key.pem").read_text()
    assert not any(line in caplog.text for line in key.splitlines()[1:-1])
