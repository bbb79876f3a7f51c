"""Request metrics have bounded labels: clients inventing methods or paths add no series."""

from __future__ import annotations

import random
import string

import pytest
from flask.testing import FlaskClient

from services.predict.metrics import OTHER_METHOD, method_label
from tests.unit.services.predict.fakes import RIDE

MADE_UP_METHODS = ["FOO", "PROPFIND", "BREW", "M-SEARCH", "PURGE"]


def series(client: FlaskClient) -> set[str]:
    """Every series of the scrape: its name and labels, without the value."""
    text = client.get("/metrics").get_data(as_text=True)
    return {line.rsplit(" ", 1)[0] for line in text.splitlines() if not line.startswith("#")}


def random_path(rng: random.Random) -> str:
    return "/" + "".join(rng.choices(string.ascii_lowercase + string.digits, k=12))


@pytest.mark.usefixtures("serving")
def test_made_up_methods_and_random_paths_add_no_series(client: FlaskClient) -> None:
    rng = random.Random(7)
    # One of each kind first: the catch-all series exist from then on.
    client.post("/predict", json=RIDE)
    client.get(random_path(rng))
    client.open(random_path(rng), method="FOO")
    client.open("/predict", method="FOO")
    client.get("/metrics")  # a scrape counts itself only in the next one
    before = series(client)
    for method in MADE_UP_METHODS + ["".join(rng.choices(string.ascii_uppercase, k=8))]:
        for path in ("/predict", "/model", random_path(rng)):
            client.open(path, method=method)
        client.get(random_path(rng))
    after = series(client)
    assert after == before, sorted(after - before)
    assert not any(method in line for line in after for method in MADE_UP_METHODS)
    assert any(f'method="{OTHER_METHOD}",route="<unmatched>"' in line for line in after)


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_standard_methods_are_their_own_label(method: str) -> None:
    assert method_label(method) == method


@pytest.mark.parametrize("method", MADE_UP_METHODS + ["get", "", "X" * 5000])
def test_other_methods_fold_into_one_label(method: str) -> None:
    assert method_label(method) == OTHER_METHOD
