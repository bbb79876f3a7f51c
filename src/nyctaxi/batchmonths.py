"""Which months a batch run scores. Light on purpose: the command checks its arguments with it
before importing pandas, XGBoost or MLflow."""

from __future__ import annotations

from datetime import date

from nyctaxi.months import month_range, parse_month
from nyctaxi.schedule import PUBLICATION_LAG_MONTHS, default_months

# A range longer than this is almost always a typo (2013 for 2023).
MAX_MONTHS = 36


def months_to_score(
    month: str | None = None, from_month: str | None = None, to_month: str | None = None
) -> list[str]:
    """One month, or from..to (both included); ValueError saying what is wrong otherwise."""
    if month and (from_month or to_month):
        raise ValueError("give either a month or a range (from, to), not both")
    if month:
        return [str(parse_month(month))]
    if not (from_month and to_month):
        raise ValueError("give a month (YYYY-MM) or both ends of a range (from, to)")
    first, last = parse_month(from_month), parse_month(to_month)
    if last < first:
        raise ValueError(f"the range ends ({last}) before it starts ({first})")
    months = month_range(first, last)
    if len(months) > MAX_MONTHS:
        raise ValueError(
            f"{first}..{last} is {len(months)} months, more than {MAX_MONTHS}: check the years"
        )
    return [str(m) for m in months]


def default_month(today: date, lag_months: int = PUBLICATION_LAG_MONTHS) -> str:
    """A scheduled run's month: the newest one TLC is expected to have published."""
    return default_months(today, lag_months)[1]  # the validation month a retrain would use
