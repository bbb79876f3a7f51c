"""Months of TLC data ("YYYY-MM"): parsing, bounds, and where a month's file lives."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

TLC_BASE_URL = "https://d37ci6vzurychx.cloudfront.net/trip-data"
RAW_KEY_PREFIX = "raw/green"

_MONTH_PATTERN = re.compile(r"(\d{4})-(\d{2})")
# TLC trip records start in 2009 (green taxis in 2013); anything earlier is a typo.
_FIRST_YEAR = 2009
_LAST_YEAR = 2100


@dataclass(frozen=True, order=True)
class Month:
    """A calendar month. `str(month)` gives "YYYY-MM"."""

    year: int
    month: int

    def __post_init__(self) -> None:
        if not 1 <= self.month <= 12:
            raise ValueError(f"month must be 1..12, got {self.month} (in {self.year}-{self.month})")
        if not _FIRST_YEAR <= self.year <= _LAST_YEAR:
            raise ValueError(
                f"year must be {_FIRST_YEAR}..{_LAST_YEAR} (TLC records start in 2009), "
                f"got {self.year}"
            )

    @classmethod
    def parse(cls, text: str | Month) -> Month:
        """Parse "YYYY-MM" (surrounding whitespace allowed); a Month is returned as is."""
        if isinstance(text, Month):
            return text
        if not isinstance(text, str):
            raise ValueError(f"expected a month as 'YYYY-MM', got {type(text).__name__} {text!r}")
        match = _MONTH_PATTERN.fullmatch(text.strip())
        if match is None:
            raise ValueError(f"expected a month as 'YYYY-MM' (e.g. '2023-01'), got {text!r}")
        return cls(int(match.group(1)), int(match.group(2)))

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def start(self) -> datetime:
        """First instant of the month (naive, NYC wall-clock time like the TLC timestamps)."""
        return datetime(self.year, self.month, 1)

    @property
    def end(self) -> datetime:
        """First instant of the next month (exclusive bound)."""
        return self.next().start

    def next(self) -> Month:
        return Month(self.year + self.month // 12, self.month % 12 + 1)

    def previous(self) -> Month:
        return Month(self.year - (self.month == 1), (self.month - 2) % 12 + 1)


def parse_month(text: str | Month) -> Month:
    """Parse "YYYY-MM" into a Month; ValueError with the offending text otherwise."""
    return Month.parse(text)


def file_name(month: str | Month) -> str:
    """The TLC file name of a month, e.g. green_tripdata_2023-01.parquet."""
    return f"green_tripdata_{parse_month(month)}.parquet"


def tlc_url(month: str | Month, base_url: str = TLC_BASE_URL) -> str:
    """Where TLC publishes the month."""
    return f"{base_url.rstrip('/')}/{file_name(month)}"


def s3_key(month: str | Month, prefix: str = RAW_KEY_PREFIX) -> str:
    """The stable key of a raw month in the bucket, e.g. raw/green/2023-01.parquet."""
    return f"{prefix.strip('/')}/{parse_month(month)}.parquet"


class MonthPairError(ValueError):
    """A training/validation pair that would not measure the model out of sample."""


def check_training_pair(train_month: str | Month, val_month: str | Month) -> tuple[Month, Month]:
    """Parse both months and require validation strictly after training.

    Validating on the training month scores the model on the rows it was fitted on, and the gate
    would compare that in-sample score with the champion's out-of-sample one. Validating on an
    earlier month tests the model on the past it was meant to forecast from.
    """
    train, val = parse_month(train_month), parse_month(val_month)
    if val <= train:
        raise MonthPairError(
            f"the validation month ({val}) must come after the training month ({train}): "
            f"train on a month and validate on a later one, e.g. train {val.previous()} and "
            f"validate {val}, or train {train} and validate {train.next()}"
        )
    return train, val


# A longer window is almost always a typo (2013 for 2023): ten years of downloads and cleaning.
MAX_WINDOW_MONTHS = 36


def month_range(first: str | Month, last: str | Month) -> list[Month]:
    """Every month from `first` to `last`, both included (empty when last < first)."""
    month, end = parse_month(first), parse_month(last)
    months: list[Month] = []
    while month <= end:
        months.append(month)
        month = month.next()
    return months


def check_training_window(
    train_from: str | Month, train_to: str | Month, val_month: str | Month
) -> list[Month]:
    """The months of a training window, oldest first: `train_from` to `train_to` included, at
    most MAX_WINDOW_MONTHS long, all before the validation month (check_training_pair)."""
    first, last = parse_month(train_from), parse_month(train_to)
    if last < first:
        raise MonthPairError(
            f"the training window ends ({last}) before it starts ({first}): "
            f"train from {last} to {first}"
        )
    months = month_range(first, last)
    if len(months) > MAX_WINDOW_MONTHS:
        raise MonthPairError(
            f"the training window {first}..{last} has {len(months)} months, more than "
            f"{MAX_WINDOW_MONTHS}: check the years"
        )
    check_training_pair(last, val_month)
    return months
