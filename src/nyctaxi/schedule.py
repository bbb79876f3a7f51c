"""Which months a scheduled run trains on when none are given."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

# TLC publishes a month's trip records roughly two months after it ends.
PUBLICATION_LAG_MONTHS = 2
# The monthly schedules in prefect.yaml run in New York time, like the TLC timestamps.
SCHEDULE_TIME_ZONE = "America/New_York"


def shift_month(month: str, delta: int) -> str:
    year, number = (int(part) for part in month.split("-"))
    index = year * 12 + (number - 1) + delta
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def default_months(today: date, lag_months: int = PUBLICATION_LAG_MONTHS) -> tuple[str, str]:
    """(train, validation): the newest month expected to be published, and the one before it."""
    val_month = shift_month(f"{today.year:04d}-{today.month:02d}", -lag_months)
    return shift_month(val_month, -1), val_month


def run_date(moment: datetime, time_zone: str = SCHEDULE_TIME_ZONE) -> date:
    """The calendar day a run is scheduled on, in the schedule's own time zone (prefect.yaml)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(ZoneInfo(time_zone)).date()


def resolve_months(train_month: str | None, val_month: str | None, today: date) -> tuple[str, str]:
    """The (train, validation) pair of a run: both given are kept; one given, the other is its
    neighbour (validation the month after training); none given (a scheduled run), the newest
    published month validates and the one before it trains."""
    if train_month and val_month:
        return train_month, val_month
    if train_month:
        return train_month, shift_month(train_month, 1)
    if val_month:
        return shift_month(val_month, -1), val_month
    return default_months(today)


def resolve_window(
    train_month: str | None,
    train_from: str | None,
    train_to: str | None,
    val_month: str | None,
    today: date,
) -> tuple[str, str, str]:
    """(train_from, train_to, validation) of a run. A window given by one end is that one month.
    A window given wins over `train_month` (the single-month parameter, which a deployment may
    carry as a default); without one, `train_month` is a window of one month; with no training
    month at all the window is the month before validation (resolve_months)."""
    last = train_to or train_from or train_month
    first = train_from or last
    last, val = resolve_months(last, val_month, today)
    return first or last, last, val
