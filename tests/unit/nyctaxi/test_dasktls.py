"""The Dask cluster's TLS files and the configuration variables naming them (no network)."""

from __future__ import annotations

import contextlib
import datetime as dt
import ssl
from pathlib import Path

import dask.config
import pytest
from distributed.security import Security

from nyctaxi import dasktls


def dask_configured(env: dict[str, str]) -> contextlib.AbstractContextManager[object]:
    """Dask's configuration as a process started with `env` would read it."""
    return dask.config.set(dask.config.merge(dask.config.config, dask.config.collect_env(env)))


def test_the_files_are_written_once_with_a_private_key_and_then_kept(tmp_path: Path) -> None:
    folder = tmp_path / "tls"
    assert dasktls.ensure_tls_files(folder) is True
    modes = {path.name: path.stat().st_mode & 0o777 for path in folder.iterdir()}
    assert modes == {"ca.pem": 0o644, "cert.pem": 0o644, "key.pem": 0o600}
    assert folder.stat().st_mode & 0o777 == 0o700
    before = {path.name: path.read_bytes() for path in folder.iterdir()}
    assert dasktls.ensure_tls_files(folder) is False
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before


def test_a_partial_set_is_replaced_by_a_complete_one(tmp_path: Path) -> None:
    dasktls.ensure_tls_files(tmp_path)
    old_key = (tmp_path / "key.pem").read_bytes()
    (tmp_path / "ca.pem").unlink()  # as if the job died before its last rename
    assert dasktls.ensure_tls_files(tmp_path) is True
    assert (tmp_path / "key.pem").read_bytes() != old_key
    dasktls.check_tls_files(tmp_path)


def test_the_certificate_serves_both_ends_of_a_mutual_tls_connection(tmp_path: Path) -> None:
    dasktls.ensure_tls_files(tmp_path)
    ca, cert, key = (str(tmp_path / name) for name in ("ca.pem", "cert.pem", "key.pem"))
    for purpose in (ssl.Purpose.SERVER_AUTH, ssl.Purpose.CLIENT_AUTH):
        context = ssl.create_default_context(purpose, cafile=ca)
        context.load_cert_chain(cert, key)  # raises when key and certificate don't match
    # The CA's own key is not kept anywhere: only these three files exist.
    assert sorted(path.name for path in tmp_path.iterdir()) == ["ca.pem", "cert.pem", "key.pem"]
    assert b"PRIVATE KEY" not in (tmp_path / "ca.pem").read_bytes()


def test_kept_files_that_do_not_belong_together_are_refused(tmp_path: Path) -> None:
    one, other = tmp_path / "one", tmp_path / "other"
    dasktls.ensure_tls_files(one)
    dasktls.ensure_tls_files(other)
    (one / "ca.pem").write_bytes((other / "ca.pem").read_bytes())
    with pytest.raises(dasktls.TlsFilesError, match="not signed by"):
        dasktls.ensure_tls_files(one)
    (one / "ca.pem").write_bytes((other / "ca.pem").read_bytes())
    (other / "key.pem").chmod(0o600)
    (one / "key.pem").write_bytes((other / "key.pem").read_bytes())
    with pytest.raises(dasktls.TlsFilesError, match="is not the key of") as error:
        dasktls.check_tls_files(one)
    assert "PRIVATE KEY" not in str(error.value)


def test_expired_or_readable_by_others_is_refused(tmp_path: Path) -> None:
    long_ago = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    dasktls.ensure_tls_files(tmp_path, now=long_ago)
    with pytest.raises(dasktls.TlsFilesError, match="delete"):
        dasktls.ensure_tls_files(tmp_path)
    fresh = tmp_path / "fresh"
    dasktls.ensure_tls_files(fresh)
    (fresh / "key.pem").chmod(0o644)
    with pytest.raises(dasktls.TlsFilesError, match="chmod 600"):
        dasktls.check_tls_files(fresh)


@pytest.mark.parametrize("role", dasktls.ROLES)
def test_the_variables_are_the_ones_dask_reads(tmp_path: Path, role: dasktls.Role) -> None:
    env = dasktls.tls_environment(tmp_path, role)
    with dask_configured(env):
        security = Security()
    assert security.require_encryption is True
    assert security.tls_min_version == ssl.TLSVersion.TLSv1_3
    assert security.tls_ca_file == str(tmp_path / "ca.pem")
    assert getattr(security, f"tls_{role}_cert") == str(tmp_path / "cert.pem")
    assert getattr(security, f"tls_{role}_key") == str(tmp_path / "key.pem")
    others = set(dasktls.ROLES) - {role}
    assert all(getattr(security, f"tls_{other}_key") is None for other in others)


def test_an_unknown_role_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown Dask role"):
        dasktls.tls_environment(tmp_path, "admin")  # type: ignore[arg-type]


def test_the_dashboard_serves_only_read_routes_and_its_own_origins() -> None:
    origins = dasktls.dashboard_origins(["localhost", "127.0.0.1", ""], 8787)
    env = dasktls.dashboard_environment(origins)
    with dask_configured(env):
        routes = dask.config.get("distributed.scheduler.http.routes")
        allowed = dask.config.get(
            "distributed.scheduler.dashboard.bokeh-application.allow_websocket_origin"
        )
    assert routes == list(dasktls.DASHBOARD_ROUTES)
    assert not any(route.endswith((".api", ".proxy")) for route in routes)
    assert allowed == ["127.0.0.1:8787", "localhost:8787"]


def test_tls_addresses() -> None:
    assert dasktls.is_tls_address(" TLS://dask-scheduler:8786")
    assert not dasktls.is_tls_address("tcp://127.0.0.1:8786")


def test_a_client_is_told_which_key_setting_it_lacks(tmp_path: Path) -> None:
    address = "tls://dask-scheduler:8786"
    with dask_configured({}):
        problem = dasktls.client_tls_problem(address)
    assert problem is not None and "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY" in problem
    env = dasktls.tls_environment(tmp_path, "client")
    with dask_configured(env):
        assert "do not exist" in str(dasktls.client_tls_problem(address))
        dasktls.ensure_tls_files(tmp_path)
        assert dasktls.client_tls_problem(address) is None
    assert dasktls.client_tls_problem("tcp://127.0.0.1:8786") is None
