"""TLC taxi zones (1..265): borough and service zone of each, as small lookup arrays.

Copied from TLC's taxi_zone_lookup.csv (LocationID, Borough, Zone, service_zone) so that the model
code shipped with every logged model carries its own copy: nothing is read from TAXI_DATA_DIR at
prediction time. tests/integration/nyctaxi/test_features.py checks these codes against the CSV in
the shared data.
"""

from __future__ import annotations

import numpy as np

N_ZONES = 265
BOROUGHS: tuple[str, ...] = (
    "Bronx",
    "Brooklyn",
    "EWR",
    "Manhattan",
    "Queens",
    "Staten Island",
    "Unknown",
)
SERVICE_ZONES: tuple[str, ...] = ("Airports", "Boro Zone", "EWR", "N/A", "Yellow Zone")

# One digit per LocationID 1..265: the index of its borough in BOROUGHS.
_BOROUGH_CODES = (
    "240355444413314410401153114414001111141133353003130141144000"
    "111411130411433110310445143313144044145344333131551133534503"
    "441430334444144034433333440311333115430433331300034540451144"
    "100003511144431444004345454031300544144051431411333333033330"
    "0033530030544011140433366"
)
# One digit per LocationID 1..265: the index of its service zone in SERVICE_ZONES.
_SERVICE_ZONE_CODES = (
    "211411111114411111111114111111111111111111414114141111111111"
    "111111141111111111411111114414111111111411444141111144111111"
    "111141111110111140144444111411411111141144441111141111111111"
    "111114111111141111111111111141411111111111141111444444144441"
    "1111141141111111111144433"
)


def _table(codes: str) -> np.ndarray:
    """float32 array indexed by LocationID; index 0 (no such zone) is NaN, missing for XGBoost."""
    table = np.full(N_ZONES + 1, np.nan, dtype=np.float32)
    table[1:] = np.frombuffer(codes.encode("ascii"), dtype=np.uint8) - ord("0")
    table.flags.writeable = False
    return table


BOROUGH_BY_ZONE: np.ndarray = _table(_BOROUGH_CODES)
SERVICE_ZONE_BY_ZONE: np.ndarray = _table(_SERVICE_ZONE_CODES)
