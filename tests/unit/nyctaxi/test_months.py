from __future__ import annotations

import re
from datetime import datetime

import pytest

from nyctaxi.months import (
    Month,
    MonthPairError,
    check_training_pair,
    file_name,
    parse_month,
    s3_key,
    tlc_url,
)


def test_parse_gives_year_and_month() -> None:
    month = parse_month("2023-01")
    assert (month.year, month.month) == (2023, 1)
    assert str(month) == "2023-01"


def test_parse_strips_whitespace_and_passes_months_through() -> None:
    assert parse_month(" 2021-02\n") == Month(2021, 2)
    month = Month(2022, 3)
    assert parse_month(month) is month


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("2023-1", "'2023-1'"),
        ("23-01", "'23-01'"),
        ("", "''"),
        ("2023/01", "'2023/01'"),
        ("2023-01-01", "'2023-01-01'"),
        ("january", "'january'"),
        ("2023-13", "month must be 1..12, got 13"),
        ("2023-00", "month must be 1..12, got 0"),
        ("1999-05", "got 1999"),
    ],
)
def test_bad_months_raise_value_error_naming_the_input(text: str, says: str) -> None:
    with pytest.raises(ValueError) as error:
        parse_month(text)
    assert says in str(error.value)


def test_non_string_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="YYYY-MM"):
        parse_month(202301)  # type: ignore[arg-type]


def test_month_bounds_roll_over_the_year() -> None:
    december = parse_month("2022-12")
    assert december.start == datetime(2022, 12, 1)
    assert december.end == datetime(2023, 1, 1)
    assert december.next() == Month(2023, 1)
    assert Month(2023, 1).previous() == december
    assert Month(2023, 5).previous() == Month(2023, 4)


def test_months_order_chronologically() -> None:
    assert sorted([Month(2023, 2), Month(2021, 12), Month(2023, 1)]) == [
        Month(2021, 12),
        Month(2023, 1),
        Month(2023, 2),
    ]


def test_file_name_url_and_key() -> None:
    assert file_name("2023-01") == "green_tripdata_2023-01.parquet"
    assert (
        tlc_url("2023-01")
        == "https://d37ci6vzurychx.cloudfront.net/trip-data/green_tripdata_2023-01.parquet"
    )
    assert tlc_url(Month(2021, 2), "http://127.0.0.1:8000/x/") == (
        "http://127.0.0.1:8000/x/green_tripdata_2021-02.parquet"
    )
    assert s3_key("2023-01") == "raw/green/2023-01.parquet"
    assert s3_key("2023-01", prefix="/data/raw/") == "data/raw/2023-01.parquet"


@pytest.mark.parametrize(("train", "val"), [("2023-01", "2023-02"), ("2022-12", "2023-03")])
def test_a_validation_month_after_the_training_month_is_a_sensible_pair(
    train: str, val: str
) -> None:
    assert check_training_pair(train, val) == (parse_month(train), parse_month(val))


@pytest.mark.parametrize(("train", "val"), [("2023-03", "2023-03"), ("2023-04", "2023-03")])
def test_validating_on_or_before_the_training_month_is_refused_with_a_pair_to_use(
    train: str, val: str
) -> None:
    with pytest.raises(MonthPairError) as refused:
        check_training_pair(train, val)
    message = str(refused.value)
    assert f"the validation month ({val}) must come after the training month ({train})" in message
    assert "train 2023-02 and validate 2023-03" in message


def test_a_malformed_month_in_a_pair_is_still_a_month_error() -> None:
    with pytest.raises(ValueError, match="month must be 1..12, got 13"):
        check_training_pair("2023-13", "2023-02")


def test_a_window_lists_its_months_across_a_year_end() -> None:
    from nyctaxi.months import check_training_window

    months = check_training_window("2022-11", "2023-02", "2023-03")
    assert [str(m) for m in months] == ["2022-11", "2022-12", "2023-01", "2023-02"]


@pytest.mark.parametrize(
    ("first", "last", "val", "says"),
    [
        ("2023-03", "2023-01", "2023-04", "ends (2023-01) before it starts"),
        ("2023-01", "2023-03", "2023-03", "must come after the training month"),
        ("2013-01", "2023-01", "2023-02", "more than 36"),
    ],
)
def test_a_bad_window_says_what_is_wrong(first: str, last: str, val: str, says: str) -> None:
    from nyctaxi.months import MonthPairError, check_training_window

    with pytest.raises(MonthPairError, match=re.escape(says)):
        check_training_window(first, last, val)
