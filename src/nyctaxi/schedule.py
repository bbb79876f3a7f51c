"""Which months a scheduled run trains on when none are given."""

from __future__ import annotations

from datetime import date

# TLC publishes a month's trip records roughly two months after it ends.
PUBLICATION_LAG_MONTHS = 2


def shift_month(month: str, delta: int) -> str:
    year, number = (int(part) for part in month.split("-"))
    index = year * 12 + (number - 1) + delta
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def default_months(today: date, lag_months: int = PUBLICATION_LAG_MONTHS) -> tuple[str, str]:
    """(train, validation): the newest month expected to be published, and the one before it."""
    val_month = shift_month(f"{today.year:04d}-{today.month:02d}", -lag_months)
    return shift_month(val_month, -1), val_month
