"""Unit tests are hermetic: no servers, no network, no ../shared.

Real TLC rows come from the small samples in tests/fixtures/tlc (see the README there); tests that
need whole real months live in tests/integration.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

TLC_SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "tlc"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    pytest.fail(
        "unit tests do not read the real TLC months: use the tlc_sample fixture "
        "(tests/fixtures/tlc), or move the test to tests/integration"
    )


@pytest.fixture(scope="session")
def tlc_sample() -> Callable[[str], Path]:
    """tlc_sample("2023-02"): a few hundred real rows of that month, in the month's own schema."""

    def path(month: str) -> Path:
        sample = TLC_SAMPLES / f"green_tripdata_{month}.sample.parquet"
        if not sample.is_file():
            pytest.fail(f"no TLC sample for {month} in {TLC_SAMPLES} (see its README)")
        return sample

    return path
