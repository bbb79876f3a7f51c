from datetime import date

import pytest

from nyctaxi.schedule import default_months, shift_month


@pytest.mark.parametrize(
    ("month", "delta", "expected"),
    [
        ("2023-01", -1, "2022-12"),
        ("2023-12", 1, "2024-01"),
        ("2023-03", -14, "2022-01"),
        ("2024-02", 0, "2024-02"),
    ],
)
def test_shift_month_crosses_year_boundaries(month: str, delta: int, expected: str) -> None:
    assert shift_month(month, delta) == expected


def test_default_months_trains_on_the_month_before_the_newest_published() -> None:
    assert default_months(date(2026, 11, 5)) == ("2026-08", "2026-09")
    assert default_months(date(2024, 2, 29)) == ("2023-11", "2023-12")
