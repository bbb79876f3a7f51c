"""Unit tests are hermetic: no servers, no network, no ../shared.

TLC-shaped months are built in code (tests/unit/tlc_shaped.py, synthetic values); tests that need
the real months live in tests/integration.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.unit.tlc_shaped import write_tlc_shaped_month


@pytest.fixture(scope="session")
def data_dir() -> Path:
    pytest.fail(
        "unit tests do not read the real TLC months: use the tlc_month fixture "
        "(a synthetic TLC-shaped month), or move the test to tests/integration"
    )


@pytest.fixture(scope="session")
def tlc_month(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """tlc_month("2023-02"): a synthetic Parquet file in that month's TLC schema, odd rows
    included (see tests/unit/tlc_shaped.py)."""
    folder = tmp_path_factory.mktemp("tlc-shaped")
    return lambda month: write_tlc_shaped_month(folder, month)
