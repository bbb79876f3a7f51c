"""Validation of /predict bodies (services.predict.validation): pure, no Flask, no model."""

from __future__ import annotations

import json
from datetime import datetime

import numpy as np
import pytest

from services.predict.validation import (
    MAX_DETAILS,
    RequestError,
    Rides,
    parse_json_body,
    parse_rides,
)

RIDE = {"PULocationID": 43, "DOLocationID": 151, "trip_distance": 1.2}
FIXED_NOW = datetime(2024, 5, 6, 7, 8, 9)
MAX_RIDES = 3
MAX_DISTANCE = 100.0


def ride(**changes: object) -> dict[str, object]:
    """RIDE with fields changed; a value of ... removes the field."""
    merged = {**RIDE, **changes}
    return {key: value for key, value in merged.items() if value is not ...}


def parse(body: bytes) -> Rides:
    return parse_rides(
        parse_json_body(body),
        max_rides=MAX_RIDES,
        max_distance=MAX_DISTANCE,
        now=lambda: FIXED_NOW,
    )


def as_body(payload: object) -> bytes:
    return json.dumps(payload).encode()


# (id, raw body, expected status, expected field of the first problem)
BAD_INPUTS: list[tuple[str, bytes, int, str]] = [
    ("empty body", b"", 400, "body"),
    ("blank body", b" \n\t", 400, "body"),
    ("truncated JSON", b'{"PULocationID": 43', 400, "body"),
    ("not JSON at all", b"PULocationID=43", 400, "body"),
    (
        "NaN distance",
        b'{"PULocationID": 43, "DOLocationID": 151, "trip_distance": NaN}',
        400,
        "body",
    ),
    (
        "Infinity distance",
        b'{"PULocationID": 43, "DOLocationID": 1, "trip_distance": Infinity}',
        400,
        "body",
    ),
    (
        "-Infinity zone",
        b'{"PULocationID": -Infinity, "DOLocationID": 1, "trip_distance": 1}',
        400,
        "body",
    ),
    (
        "number overflowing to inf",
        b'{"PULocationID": 43, "DOLocationID": 1, "trip_distance": 1e999}',
        400,
        "body",
    ),
    ("5000-digit integer", b'{"PULocationID": ' + b"9" * 5000 + b"}", 400, "body"),
    ("deeply nested arrays", b"[" * 100_000 + b"]" * 100_000, 400, "body"),
    ("invalid UTF-8", b'{"PULocationID": "\xff\xfe"}', 400, "body"),
    ("a JSON string", b'"43"', 400, "body"),
    ("a JSON number", b"43", 400, "body"),
    ("JSON null", b"null", 400, "body"),
    ("empty list", b"[]", 400, "body"),
    ("too many rides", as_body([RIDE] * (MAX_RIDES + 1)), 413, "body"),
    ("missing PULocationID", as_body(ride(PULocationID=...)), 422, "PULocationID"),
    ("missing DOLocationID", as_body(ride(DOLocationID=...)), 422, "DOLocationID"),
    ("missing trip_distance", as_body(ride(trip_distance=...)), 422, "trip_distance"),
    ("null PULocationID", as_body(ride(PULocationID=None)), 422, "PULocationID"),
    ("zone 0", as_body(ride(PULocationID=0)), 422, "PULocationID"),
    ("zone 266", as_body(ride(DOLocationID=266)), 422, "DOLocationID"),
    ("negative zone", as_body(ride(DOLocationID=-5)), 422, "DOLocationID"),
    ("huge zone", as_body(ride(PULocationID=10**30)), 422, "PULocationID"),
    ("zone as string", as_body(ride(PULocationID="43")), 422, "PULocationID"),
    ("fractional zone", as_body(ride(PULocationID=43.5)), 422, "PULocationID"),
    ("boolean zone", as_body(ride(DOLocationID=True)), 422, "DOLocationID"),
    ("zone as object", as_body(ride(PULocationID={"id": 43})), 422, "PULocationID"),
    ("negative distance", as_body(ride(trip_distance=-0.1)), 422, "trip_distance"),
    ("absurd distance", as_body(ride(trip_distance=244_152.0)), 422, "trip_distance"),
    ("distance as string", as_body(ride(trip_distance="1.2")), 422, "trip_distance"),
    ("boolean distance", as_body(ride(trip_distance=False)), 422, "trip_distance"),
    ("distance as list", as_body(ride(trip_distance=[1.2])), 422, "trip_distance"),
    (
        "words for a time",
        as_body(ride(lpep_pickup_datetime="yesterday")),
        422,
        "lpep_pickup_datetime",
    ),
    (
        "month 13",
        as_body(ride(lpep_pickup_datetime="2023-13-01T08:15:00")),
        422,
        "lpep_pickup_datetime",
    ),
    (
        "epoch number time",
        as_body(ride(lpep_pickup_datetime=1677658500)),
        422,
        "lpep_pickup_datetime",
    ),
    (
        "year 1900",
        as_body(ride(lpep_pickup_datetime="1900-01-01T00:00:00")),
        422,
        "lpep_pickup_datetime",
    ),
    (
        "year 9999",
        as_body(ride(lpep_pickup_datetime="9999-12-31T23:59:59")),
        422,
        "lpep_pickup_datetime",
    ),
    (
        "year 1 with an offset",
        as_body(ride(lpep_pickup_datetime="0001-01-01T00:00:00+01:00")),
        422,
        "lpep_pickup_datetime",
    ),
    (
        "very long time",
        as_body(ride(lpep_pickup_datetime="2023-03-01" + " " * 100)),
        422,
        "lpep_pickup_datetime",
    ),
    ("bad ride in a batch", as_body([RIDE, ride(PULocationID=999)]), 422, "[1].PULocationID"),
    ("non-object in a batch", as_body([RIDE, 5]), 422, "[1]"),
    ("nested list in a batch", as_body([[RIDE]]), 422, "[0]"),
]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [case[1:] for case in BAD_INPUTS],
    ids=[case[0] for case in BAD_INPUTS],
)
def test_bad_input_is_a_client_error_naming_the_field(body: bytes, status: int, field: str) -> None:
    with pytest.raises(RequestError) as caught:
        parse(body)
    error = caught.value
    assert error.status == status
    assert error.details, "a client error must say what is wrong"
    assert error.details[0].field == field
    assert error.details[0].problem
    document = error.to_json()
    assert set(document) == {"error", "details"}
    json.dumps(document)  # serialisable as it is


def test_at_least_twenty_bad_inputs_are_covered() -> None:
    assert len(BAD_INPUTS) >= 20


def test_one_ride_becomes_arrays_of_one() -> None:
    rides = parse(as_body(ride(lpep_pickup_datetime="2023-03-01T08:15:00")))
    assert rides.single
    assert len(rides) == 1
    assert rides.pu_location_id.tolist() == [43]
    assert rides.do_location_id.tolist() == [151]
    assert rides.trip_distance.tolist() == [1.2]
    assert rides.pickup.dtype == np.dtype("datetime64[us]")
    assert rides.pickup[0] == np.datetime64("2023-03-01T08:15:00")


def test_a_batch_keeps_its_order() -> None:
    batch = [ride(PULocationID=zone, trip_distance=zone / 10) for zone in (7, 1, 265)]
    rides = parse(as_body(batch))
    assert not rides.single
    assert rides.pu_location_id.tolist() == [7, 1, 265]
    assert rides.trip_distance.tolist() == [0.7, 0.1, 26.5]


def test_missing_or_null_pickup_time_is_now_in_new_york() -> None:
    rides = parse(as_body([RIDE, ride(lpep_pickup_datetime=None)]))
    assert rides.pickup.tolist() == [FIXED_NOW, FIXED_NOW]


def test_times_with_an_offset_become_new_york_wall_clock() -> None:
    # 13:15 UTC on 1 March 2023 is 08:15 EST; 12:15 UTC on 1 July is 08:15 EDT.
    batch = [
        ride(lpep_pickup_datetime="2023-03-01T13:15:00Z"),
        ride(lpep_pickup_datetime="2023-07-01T12:15:00+00:00"),
        ride(lpep_pickup_datetime="2023-03-01T08:15:00"),
    ]
    pickups = parse(as_body(batch)).pickup.astype("datetime64[s]").astype(str).tolist()
    assert pickups == ["2023-03-01T08:15:00", "2023-07-01T08:15:00", "2023-03-01T08:15:00"]


def test_lenient_but_unambiguous_values_are_accepted() -> None:
    accepted = ride(
        PULocationID=43.0,  # pandas often writes integer columns as floats
        trip_distance=0,  # a zero-mile ride is odd but real
        lpep_pickup_datetime="2023-03-01 08:15:00",
        VendorID=2,  # extra TLC columns are ignored
        store_and_fwd_flag="N",
    )
    rides = parse(as_body(accepted))
    assert rides.pu_location_id.tolist() == [43]
    assert rides.trip_distance.tolist() == [0.0]


def test_every_problem_is_reported_but_the_list_is_capped() -> None:
    batch = [ride(PULocationID=0, DOLocationID=0)] * 40
    with pytest.raises(RequestError) as caught:
        parse_rides(batch, max_rides=100, max_distance=MAX_DISTANCE)
    assert caught.value.status == 422
    assert "80 problems" in caught.value.error
    assert len(caught.value.details) == MAX_DETAILS


def test_nan_passed_in_python_is_rejected_too() -> None:
    # json.loads never yields NaN here, but the parser must not rely on that alone
    with pytest.raises(RequestError) as caught:
        parse_rides(ride(trip_distance=float("nan")), max_rides=1, max_distance=MAX_DISTANCE)
    assert caught.value.details[0].field == "trip_distance"
