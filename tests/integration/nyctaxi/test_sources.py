"""Data sources on the real TLC files (../shared/data/tlc): published checksums, row counts.

Downloads, lookups and validation on a few hundred real rows run without the shared data:
tests/unit/nyctaxi/test_sources.py.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from nyctaxi import sources
from nyctaxi.months import file_name

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

MONTH = "2023-01"


def test_find_local_in_the_real_folder(data_dir: Path) -> None:
    assert sources.find_local(MONTH, data_dir) == data_dir / file_name(MONTH)
    assert sources.find_local("2031-07", data_dir) is None


def test_sha256_matches_the_published_checksums(data_dir: Path) -> None:
    sums = dict(
        reversed(line.split()) for line in (data_dir / "SHA256SUMS").read_text().splitlines()
    )
    path = data_dir / file_name(MONTH)
    assert sources.sha256_file(path) == sums[path.name]
    assert sources.sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_validate_parquet_counts_rows_of_real_months(data_dir: Path) -> None:
    # both dtype generations (int64 zone IDs up to 2023-01, int32 after)
    assert sources.validate_parquet(data_dir / file_name("2023-01")) == 68_211
    assert sources.validate_parquet(data_dir / file_name("2023-02")) == 64_809
