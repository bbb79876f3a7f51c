"""Parse and check request bodies into numpy arrays for the model, without pandas.

Every problem a client can cause ends as a `RequestError` (a 4xx status, a summary and one
detail per bad field), never as an exception the app would turn into a 5xx.

Rules (documented in the README and the OpenAPI spec):
- the body is JSON: one ride (an object) or a non-empty array of ride objects;
- `PULocationID` and `DOLocationID` are integers in 1..265 (integral floats such as 43.0 pass);
- `trip_distance` is a number of miles, 0 <= d <= the configured maximum;
- `lpep_pickup_datetime` is an ISO 8601 string; when it is absent or null, the current NYC time
  is used. Times with an offset are converted to NYC wall-clock time (the model learned TLC
  times, which are NYC local and naive); naive times are taken as NYC local;
- other fields are ignored, so a full TLC record can be sent as it is;
- NaN and Infinity are not JSON and are rejected, as are numbers too large to be finite.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

NYC_TIME_ZONE = "America/New_York"
MIN_ZONE_ID, MAX_ZONE_ID = 1, 265
MIN_YEAR, MAX_YEAR = 1970, 2100
MAX_TIME_LENGTH = 64
MAX_DETAILS = 50  # a response lists at most this many problems; the summary gives the count
ZONE_FIELDS = ("PULocationID", "DOLocationID")
DISTANCE_FIELD = "trip_distance"
PICKUP_FIELD = "lpep_pickup_datetime"


@dataclass(frozen=True)
class Problem:
    field: str
    problem: str


class RequestError(Exception):
    """A client error: HTTP status, a one-line summary and the problems by field."""

    def __init__(self, status: int, error: str, details: list[Problem]) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.details = details

    def to_json(self) -> dict[str, Any]:
        return {
            "error": self.error,
            "details": [{"field": d.field, "problem": d.problem} for d in self.details],
        }


@dataclass(frozen=True)
class Rides:
    """Validated rides as the arrays `TripDurationModel.predict_rides` takes."""

    pu_location_id: np.ndarray
    do_location_id: np.ndarray
    trip_distance: np.ndarray
    pickup: np.ndarray  # datetime64[us], naive NYC wall-clock time
    single: bool

    def __len__(self) -> int:
        return int(self.trip_distance.shape[0])


@cache
def nyc_time_zone() -> ZoneInfo:
    return ZoneInfo(NYC_TIME_ZONE)


def nyc_now() -> datetime:
    """The current NYC wall-clock time, naive, like TLC's timestamps."""
    return datetime.now(nyc_time_zone()).replace(tzinfo=None)


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is too large to be finite")
    return value


def parse_json_body(body: bytes) -> Any:
    """The decoded JSON document; a 400 RequestError when the body is empty or not strict JSON."""
    if not body.strip():
        raise RequestError(400, "empty body", [Problem("body", "send a JSON object or array")])
    try:
        return json.loads(body, parse_constant=_reject_constant, parse_float=_finite_float)
    except json.JSONDecodeError as error:
        problem = f"not valid JSON: {error.msg} at line {error.lineno} column {error.colno}"
    except (ValueError, RecursionError) as error:
        # bad encodings, NaN/Infinity, overflowing numbers, absurdly deep nesting
        problem = f"not valid JSON: {str(error)[:200] or type(error).__name__}"
    raise RequestError(400, "body is not valid JSON", [Problem("body", problem)])


class _RideParser:
    """Collects the values of valid rides and the problems of invalid ones."""

    def __init__(self, max_distance: float, now: Callable[[], datetime]) -> None:
        self.max_distance = max_distance
        self.now = now
        self._now_value: datetime | None = None  # one "now" per request
        self.problems: list[Problem] = []
        self.problem_count = 0
        self.zones: dict[str, list[int]] = {name: [] for name in ZONE_FIELDS}
        self.distances: list[float] = []
        self.pickups: list[datetime] = []

    def add_problem(self, field: str, problem: str) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_DETAILS:
            self.problems.append(Problem(field, problem))

    def add(self, ride: Any, prefix: str) -> None:
        if not isinstance(ride, dict):
            self.add_problem(prefix.rstrip(".") or "body", "must be a JSON object (one ride)")
            return
        before = self.problem_count
        zones = [self._zone(ride, name, prefix) for name in ZONE_FIELDS]
        distance = self._distance(ride, prefix)
        pickup = self._pickup(ride, prefix)
        if self.problem_count == before:
            for name, zone in zip(ZONE_FIELDS, zones, strict=True):
                self.zones[name].append(zone)  # type: ignore[arg-type]
            self.distances.append(distance)  # type: ignore[arg-type]
            self.pickups.append(pickup)  # type: ignore[arg-type]

    def _zone(self, ride: dict[str, Any], name: str, prefix: str) -> int | None:
        if name not in ride or ride[name] is None:
            self.add_problem(prefix + name, "is required")
            return None
        value = ride[name]
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.add_problem(prefix + name, f"must be an integer, got {_type_name(value)}")
            return None
        if isinstance(value, float) and not value.is_integer():
            self.add_problem(prefix + name, f"must be an integer, got {value}")
            return None
        if not MIN_ZONE_ID <= value <= MAX_ZONE_ID:
            shown = value if abs(value) < 1e12 else "a huge number"
            self.add_problem(
                prefix + name, f"must be a TLC zone ID in {MIN_ZONE_ID}..{MAX_ZONE_ID}, got {shown}"
            )
            return None
        return int(value)

    def _distance(self, ride: dict[str, Any], prefix: str) -> float | None:
        field = prefix + DISTANCE_FIELD
        if DISTANCE_FIELD not in ride or ride[DISTANCE_FIELD] is None:
            self.add_problem(field, "is required")
            return None
        value = ride[DISTANCE_FIELD]
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.add_problem(field, f"must be a number of miles, got {_type_name(value)}")
            return None
        if isinstance(value, float) and not math.isfinite(value):
            self.add_problem(field, "must be a finite number")
            return None
        if value < 0:
            self.add_problem(field, "must not be negative")
            return None
        if value > self.max_distance:
            self.add_problem(field, f"must be at most {self.max_distance:g} miles")
            return None
        return float(value)

    def _pickup(self, ride: dict[str, Any], prefix: str) -> datetime | None:
        value = ride.get(PICKUP_FIELD)
        if value is None:
            if self._now_value is None:
                self._now_value = self.now()
            return self._now_value
        field = prefix + PICKUP_FIELD
        if not isinstance(value, str):
            self.add_problem(
                field, f"must be an ISO 8601 date-time string, got {_type_name(value)}"
            )
            return None
        if len(value) > MAX_TIME_LENGTH:
            self.add_problem(field, "is too long to be a date-time")
            return None
        try:
            pickup = datetime.fromisoformat(value)
        except ValueError:
            self.add_problem(field, f"is not an ISO 8601 date-time: {value!r}")
            return None
        if not MIN_YEAR <= pickup.year <= MAX_YEAR:
            self.add_problem(field, f"year must be in {MIN_YEAR}..{MAX_YEAR}")
            return None
        if pickup.tzinfo is not None:
            pickup = pickup.astimezone(nyc_time_zone()).replace(tzinfo=None)
        if not MIN_YEAR <= pickup.year <= MAX_YEAR:  # again: an offset can cross a year
            self.add_problem(field, f"year must be in {MIN_YEAR}..{MAX_YEAR}")
            return None
        return pickup

    def rides(self, single: bool) -> Rides:
        return Rides(
            pu_location_id=np.array(self.zones["PULocationID"], dtype=np.int32),
            do_location_id=np.array(self.zones["DOLocationID"], dtype=np.int32),
            trip_distance=np.array(self.distances, dtype=np.float64),
            pickup=np.array(self.pickups, dtype="datetime64[us]"),
            single=single,
        )


def _type_name(value: Any) -> str:
    return {
        bool: "a boolean",
        str: "a string",
        list: "an array",
        dict: "an object",
        int: "a number",
        float: "a number",
    }.get(type(value), type(value).__name__)


def parse_rides(
    payload: Any,
    *,
    max_rides: int,
    max_distance: float,
    now: Callable[[], datetime] = nyc_now,
) -> Rides:
    """Validated rides from a decoded body: one ride (object) or a list of them."""
    parser = _RideParser(max_distance, now)
    if isinstance(payload, dict):
        parser.add(payload, "")
        single = True
    elif isinstance(payload, list):
        if not payload:
            raise RequestError(400, "no rides", [Problem("body", "the array of rides is empty")])
        if len(payload) > max_rides:
            detail = Problem("body", f"{len(payload)} rides; at most {max_rides} per request")
            raise RequestError(413, "too many rides", [detail])
        for index, ride in enumerate(payload):
            parser.add(ride, f"[{index}].")
        single = False
    else:
        detail = Problem(
            "body", f"must be a ride object or an array of rides, got {_type_name(payload)}"
        )
        raise RequestError(400, "body is neither a ride nor a list of rides", [detail])
    if parser.problem_count:
        count = parser.problem_count
        raise RequestError(
            422, f"invalid input: {count} problem{'s' * (count > 1)}", parser.problems
        )
    return parser.rides(single)
