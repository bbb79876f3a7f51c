"""The Dask cluster's doors: mutual TLS between scheduler, workers and clients, and a read-only
dashboard.

A Dask scheduler runs whatever pickled function a connected client sends it, so nothing may
connect without the cluster's key. One folder per stack holds the files (Docker: the `dask-tls`
volume, written by `python -m services.dask.certs`; natively: NYCTAXI_HOME/dask-tls, written by
`make run`):

    ca.pem    the certificate of a CA made for this stack alone; its key is thrown away once it
              has signed cert.pem, so nobody (not even this code) can issue another certificate
    cert.pem  the one certificate every member presents: scheduler, workers and clients alike
              (Dask checks the chain, not host names or roles, so per-role certificates would
              add files, not security)
    key.pem   its private key (mode 0600): whoever reads it may join and run code

Every process gets the files through Dask's own configuration variables (`tls_environment`), so
`dask scheduler`, `dask worker` and any `distributed.Client("tls://...")` use them with no code
of ours in between, and none of them can print the key.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

logger = logging.getLogger(__name__)

Role = Literal["scheduler", "worker", "client"]
ROLES: tuple[Role, ...] = ("scheduler", "worker", "client")
CA_FILE = "ca.pem"
CERT_FILE = "cert.pem"
KEY_FILE = "key.pem"
FILES = (KEY_FILE, CERT_FILE, CA_FILE)  # the order they are written in: ca.pem last
# Long enough for a stack's lifetime; rotation is deleting the folder (README, Scale-out on Dask).
VALID_DAYS = 3650

_COMM = "DASK_DISTRIBUTED__COMM__"
# The scheduler's HTTP routes (Dask's defaults minus `proxy`): Prometheus metrics, the info and
# JSON pages, /health, static files; all of them only read. Named here so that no configuration
# file can add the `api` route (POST /api/v1/retire_workers stops workers) to a dashboard that
# has no login; `proxy` forwards requests to workers' HTTP servers when jupyter-server-proxy is
# installed.
DASHBOARD_ROUTES = (
    "distributed.http.scheduler.prometheus",
    "distributed.http.scheduler.info",
    "distributed.http.scheduler.json",
    "distributed.http.health",
    "distributed.http.statics",
)


def tls_environment(folder: Path | str, role: Role) -> dict[str, str]:
    """Dask configuration variables giving `role` the stack's key, certificate and CA, with
    encryption required (a plain `tcp://` address is refused instead of sent in clear)."""
    if role not in ROLES:
        raise ValueError(f"unknown Dask role {role!r}: one of {', '.join(ROLES)}")
    folder = Path(folder)
    upper = role.upper()
    return {
        # Python literals: Dask parses these values with ast.literal_eval.
        f"{_COMM}REQUIRE_ENCRYPTION": "True",
        f"{_COMM}TLS__MIN_VERSION": "1.3",  # every member is our own Python and OpenSSL
        f"{_COMM}TLS__CA_FILE": str(folder / CA_FILE),
        f"{_COMM}TLS__{upper}__CERT": str(folder / CERT_FILE),
        f"{_COMM}TLS__{upper}__KEY": str(folder / KEY_FILE),
    }


def roles_environment(folder: Path | str, roles: Iterable[Role]) -> dict[str, str]:
    """`tls_environment` of several roles at once (a worker is also a client of the scheduler
    when a task asks for one)."""
    env: dict[str, str] = {}
    for role in roles:
        env |= tls_environment(folder, role)
    return env


def dashboard_environment(origins: Iterable[str]) -> dict[str, str]:
    """The scheduler's HTTP routes pinned to the read-only ones (DASHBOARD_ROUTES), and its live
    plots (Bokeh websockets) refused to pages not served from `origins` ("host:port", what the
    browser has in its address bar): another site open in the browser can't read them."""
    return {
        "DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES": repr(list(DASHBOARD_ROUTES)),
        "DASK_DISTRIBUTED__SCHEDULER__DASHBOARD__BOKEH_APPLICATION__ALLOW_WEBSOCKET_ORIGIN": repr(
            sorted(set(origins))
        ),
    }


def dashboard_origins(hosts: Iterable[str], port: int) -> list[str]:
    """`host:port` of every name the browser may use for the dashboard."""
    return sorted({f"{host}:{port}" for host in hosts if host})


def is_tls_address(address: str) -> bool:
    return address.strip().lower().startswith("tls://")


# Dask configuration key -> the variable that sets it, for what a client needs.
_CLIENT_SETTINGS = {
    "distributed.comm.tls.ca-file": f"{_COMM}TLS__CA_FILE",
    "distributed.comm.tls.client.cert": f"{_COMM}TLS__CLIENT__CERT",
    "distributed.comm.tls.client.key": f"{_COMM}TLS__CLIENT__KEY",
}


def client_tls_problem(address: str) -> str | None:
    """Why a Dask client in this process can't connect to a tls:// `address` (its TLS settings
    are missing or name missing files), or None. Dask's own error for it is a TypeError about
    an `ssl_context`, after its connect timeout."""
    if not is_tls_address(address):
        return None
    import dask.config  # only processes that use a cluster import Dask

    unset = [var for key, var in _CLIENT_SETTINGS.items() if not dask.config.get(key, None)]
    if unset:
        names = ", ".join(unset)
        return f"{address} asks for the cluster's key and this process has none: set {names}"
    missing = [
        str(dask.config.get(key))
        for key in _CLIENT_SETTINGS
        if not Path(str(dask.config.get(key))).is_file()
    ]
    if missing:
        return f"the Dask TLS files {', '.join(missing)} do not exist (compose: --profile dask)"
    return None


@dataclass(frozen=True)
class TlsFiles:
    folder: Path

    @property
    def paths(self) -> dict[str, Path]:
        return {name: self.folder / name for name in FILES}

    def present(self) -> list[str]:
        return [name for name, path in self.paths.items() if path.is_file()]

    def complete(self) -> bool:
        return len(self.present()) == len(FILES)


def ensure_tls_files(folder: Path | str, *, now: dt.datetime | None = None) -> bool:
    """Write ca.pem, cert.pem and key.pem into `folder` unless all three are there already
    (then they are checked and kept: members running with them keep trusting each other).
    Returns True when it wrote them. A partial set (a crash while writing) was never usable by
    anyone, and is replaced."""
    files = TlsFiles(Path(folder))
    if files.complete():
        check_tls_files(files.folder, now=now)
        return False
    if files.present():
        logger.warning(
            "%s holds only %s of the Dask TLS files: writing a new set",
            files.folder,
            ", ".join(files.present()),
        )
    files.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    key_pem, cert_pem, ca_pem = generate(now=now)
    for name, data, mode in (
        (KEY_FILE, key_pem, 0o600),
        (CERT_FILE, cert_pem, 0o644),
        (CA_FILE, ca_pem, 0o644),
    ):
        _write_atomically(files.folder / name, data, mode)
    return True


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    """Created with its final mode (never a moment readable by others), then renamed in place."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.unlink(missing_ok=True)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(temporary, mode)  # the umask may have taken bits the certificates need
    os.replace(temporary, path)


def generate(*, now: dt.datetime | None = None) -> tuple[bytes, bytes, bytes]:
    """(key.pem, cert.pem, ca.pem) of a fresh stack: a CA whose key is discarded after signing
    one certificate valid for both ends of a connection (server and client authentication)."""
    start = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(hours=1)  # clocks a little behind
    end = start + dt.timedelta(days=VALID_DAYS)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nyctaxi dask cluster CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(signing=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nyctaxi-dask")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signing=False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("dask-scheduler"), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    pem = serialization.Encoding.PEM
    return key_pem, cert.public_bytes(pem), ca_cert.public_bytes(pem)


def _key_usage(*, signing: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not signing,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signing,
        crl_sign=signing,
        encipher_only=False,
        decipher_only=False,
    )


class TlsFilesError(ValueError):
    """The folder's files cannot secure a cluster; the message says why (never their content)."""


def check_tls_files(folder: Path | str, *, now: dt.datetime | None = None) -> None:
    """Raise TlsFilesError unless cert.pem is signed by ca.pem, matches key.pem, is in its
    validity period and key.pem is private to its owner."""
    paths = TlsFiles(Path(folder)).paths
    try:
        ca = x509.load_pem_x509_certificate(paths[CA_FILE].read_bytes())
        cert = x509.load_pem_x509_certificate(paths[CERT_FILE].read_bytes())
        key = serialization.load_pem_private_key(paths[KEY_FILE].read_bytes(), password=None)
    except (OSError, ValueError) as error:
        problem = type(error).__name__
        raise TlsFilesError(f"unreadable Dask TLS files in {folder}: {problem}") from error
    if _public_pem(key.public_key()) != _public_pem(cert.public_key()):
        raise TlsFilesError(f"{paths[KEY_FILE]} is not the key of {paths[CERT_FILE]}")
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError) as error:
        raise TlsFilesError(f"{paths[CERT_FILE]} is not signed by {paths[CA_FILE]}") from error
    moment = now or dt.datetime.now(dt.UTC)
    if not cert.not_valid_before_utc <= moment <= cert.not_valid_after_utc:
        raise TlsFilesError(
            f"{paths[CERT_FILE]} is valid from {cert.not_valid_before_utc:%Y-%m-%d} to "
            f"{cert.not_valid_after_utc:%Y-%m-%d}: delete {folder} to make a new set"
        )
    if paths[KEY_FILE].stat().st_mode & 0o077:
        raise TlsFilesError(f"{paths[KEY_FILE]} is readable by others: chmod 600 it")


def _public_pem(public_key: object) -> bytes:
    return public_key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
