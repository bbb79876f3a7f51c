from datetime import UTC, date, datetime

import pytest

from nyctaxi.schedule import default_months, resolve_months, run_date, shift_month


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


def test_resolve_months_keeps_a_given_pair_and_completes_a_half_given_one() -> None:
    today = date(2026, 11, 5)
    assert resolve_months("2023-01", "2023-03", today) == ("2023-01", "2023-03")
    assert resolve_months("2023-12", None, today) == ("2023-12", "2024-01")
    assert resolve_months(None, "2023-01", today) == ("2022-12", "2023-01")
    assert resolve_months(None, None, today) == default_months(today)
    assert resolve_months("", "", today) == default_months(today)


def test_run_date_is_the_day_in_new_york_where_the_schedule_runs() -> None:
    # 02:00 UTC on the 5th is still the 4th in New York; naive times are taken as UTC
    assert run_date(datetime(2023, 6, 5, 2, 0, tzinfo=UTC)) == date(2023, 6, 4)
    assert run_date(datetime(2023, 6, 5, 10, 0)) == date(2023, 6, 5)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ((None, "2022-01", "2022-03", "2023-01"), ("2022-01", "2022-03", "2023-01")),
        ((None, "2022-01", None, None), ("2022-01", "2022-01", "2022-02")),
        ((None, None, "2022-03", None), ("2022-03", "2022-03", "2022-04")),
        (("2023-01", None, None, None), ("2023-01", "2023-01", "2023-02")),
        (("2023-01", "2023-01", None, "2023-03"), ("2023-01", "2023-01", "2023-03")),
        ((None, None, None, None), ("2026-08", "2026-08", "2026-09")),
    ],
)
def test_resolve_window(given: tuple[str | None, ...], expected: tuple[str, str, str]) -> None:
    from nyctaxi.schedule import resolve_window

    assert resolve_window(*given, date(2026, 11, 30)) == expected


def test_a_window_wins_over_a_train_month_default() -> None:
    from nyctaxi.schedule import resolve_window

    # A deployment's parameters keep their train_month default when a run gives a window.
    assert resolve_window("2023-01", "2022-01", "2022-03", "2023-01", date(2026, 11, 30)) == (
        "2022-01",
        "2022-03",
        "2023-01",
    )
