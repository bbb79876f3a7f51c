"""One-shot `dask-certs` job of docker-compose.yml (profile `dask`): the cluster's mutual-TLS files.

    python -m services.dask.certs --into DIR

Writes ca.pem, cert.pem and key.pem (mode 0600) into DIR once (nyctaxi.dasktls); on later runs
the files there are checked and kept, so the running scheduler, workers and clients keep
trusting each other. Exit status 0 when DIR holds a usable set; 1 (with the reason, never a
file's content) when the kept files are broken or expired: delete them (the `dask-tls` volume)
to make a new set. Needs no network and no credential.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from nyctaxi.dasktls import TlsFilesError, ensure_tls_files

logger = logging.getLogger("services.dask.certs")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the Dask cluster's TLS files once.")
    parser.add_argument("--into", type=Path, required=True, help="folder of the three files")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        written = ensure_tls_files(args.into)
    except (TlsFilesError, OSError) as error:
        logger.error("%s", error)
        return 1
    logger.info(
        "Dask TLS files in %s %s", args.into, "written" if written else "kept (already there)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
