"""Routes, error shapes, hot swap and metrics of the prediction app, through Flask's test client.

The app runs with our real ModelHolder over a fake model *source* (fakes.py; fixtures in
conftest.py). No MLflow here: the real registry is exercised in
tests/integration/test_predict_service.py. The fake predictor's answer encodes the version that
made it, so a response mixing two versions would show.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from services.predict.holder import LoadedModel, ModelHolder
from tests.unit.services.predict.fakes import RIDE, FakeSource, assert_error


def test_health_answers_without_a_model(client: FlaskClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_without_a_model_ready_model_and_predict_say_what_is_missing(
    client: FlaskClient, holder: ModelHolder
) -> None:
    holder.refresh()
    for response in (
        client.get("/ready"),
        client.get("/model"),
        client.post("/predict", json=RIDE),
    ):
        body = assert_error(response, 503, "model")
        problem = body["details"][0]["problem"]
        assert "has no version of model 'fake' under alias 'champion'" in problem
        assert "registry.internal" not in problem


def test_an_unreachable_registry_is_said_without_its_address_or_the_error_text(
    client: FlaskClient, source: FakeSource, holder: ModelHolder, caplog: pytest.LogCaptureFixture
) -> None:
    source.unreachable = True
    holder.refresh()
    body = assert_error(client.post("/predict", json=RIDE), 503, "model")
    problem = body["details"][0]["problem"]
    assert "registry is unreachable" in problem and "'fake' under alias 'champion'" in problem
    assert "registry.internal" not in problem and "connection refused" not in problem
    # the detail stays for the logs, credentials masked
    assert "connection refused" in (holder.problem or "")
    assert "connection refused by http://***@registry.internal" in caplog.text
    assert "s3cret-pw" not in (holder.problem or "") + caplog.text


def test_becomes_ready_by_itself_when_the_alias_appears(
    client: FlaskClient, source: FakeSource, holder: ModelHolder
) -> None:
    assert holder.refresh() is False
    source.alias_version = "1"
    assert holder.refresh() is True
    response = client.get("/ready")
    assert response.status_code == 200
    assert response.get_json()["model"] == {"name": "fake", "version": "1", "alias": "champion"}


@pytest.mark.usefixtures("serving")
def test_one_ride(client: FlaskClient) -> None:
    response = client.post("/predict", json=RIDE)
    assert response.status_code == 200
    assert response.get_json() == {
        "duration": pytest.approx(11.2),
        "model": {"name": "fake", "version": "1", "alias": "champion"},
    }
    assert response.headers["X-Model-Version"] == "1"


@pytest.mark.usefixtures("serving")
def test_a_batch_answers_in_input_order(client: FlaskClient) -> None:
    rides = [{**RIDE, "trip_distance": distance} for distance in (3.0, 0.5, 2.25)]
    response = client.post("/predict", json=rides)
    assert response.status_code == 200
    body = response.get_json()
    assert body["predictions"] == pytest.approx([13.0, 10.5, 12.25])
    assert body["model"]["version"] == "1"


@pytest.mark.usefixtures("serving")
def test_model_describes_version_run_and_metrics(client: FlaskClient) -> None:
    body = client.get("/model").get_json()
    assert body["version"] == "1"
    assert body["run_id"] == "run-1"
    assert body["metrics"] == {"val_rmse": 6.0}
    assert body["loaded_at"]


@pytest.mark.usefixtures("serving")
@pytest.mark.parametrize(
    ("kwargs", "status", "field"),
    [
        ({"data": json.dumps(RIDE), "content_type": "text/plain"}, 415, "Content-Type"),
        ({"data": json.dumps(RIDE)}, 415, "Content-Type"),
        (
            {"data": "PULocationID=43", "content_type": "application/x-www-form-urlencoded"},
            415,
            "Content-Type",
        ),
        ({"data": "", "content_type": "application/json"}, 400, "body"),
        ({"data": "{not json", "content_type": "application/json"}, 400, "body"),
        ({"data": '{"PULocationID": NaN}', "content_type": "application/json"}, 400, "body"),
        ({"json": [RIDE] * 6}, 413, "body"),
        ({"data": "[" + " " * 5000 + "]", "content_type": "application/json"}, 413, "body"),
        ({"json": {**RIDE, "PULocationID": 300}}, 422, "PULocationID"),
        ({"json": {**RIDE, "trip_distance": -1}}, 422, "trip_distance"),
        (
            {"json": [RIDE, {**RIDE, "lpep_pickup_datetime": "soon"}]},
            422,
            "[1].lpep_pickup_datetime",
        ),
    ],
)
def test_client_errors_are_json_with_details(
    client: FlaskClient, kwargs: dict, status: int, field: str
) -> None:
    assert_error(client.post("/predict", **kwargs), status, field)


def test_json_with_a_charset_is_json(client: FlaskClient, serving: ModelHolder) -> None:
    response = client.post(
        "/predict", data=json.dumps(RIDE), content_type="application/json; charset=utf-8"
    )
    assert response.status_code == 200


def test_unknown_route_is_a_json_404(client: FlaskClient) -> None:
    assert_error(client.get("/predictions"), 404, "path")


def test_wrong_method_is_a_json_405_with_allow(client: FlaskClient) -> None:
    response = client.get("/predict")
    assert_error(response, 405, "method")
    assert "POST" in response.headers["Allow"]
    assert_error(client.post("/health"), 405, "method")


def test_a_failing_model_is_a_json_500_that_quotes_no_exception(
    client: FlaskClient, holder: ModelHolder, source: FakeSource, caplog: pytest.LogCaptureFixture
) -> None:
    source.alias_version = "1"
    holder.refresh()

    class Exploding:
        def predict_rides(self, *arrays: np.ndarray) -> np.ndarray:
            raise RuntimeError(f"boom reading {source.location}/artifacts")

    exploding = LoadedModel(name="fake", version="9", alias="champion", predictor=Exploding())
    holder._current = exploding  # a server-side fault, which the swap path would never let in
    body = assert_error(client.post("/predict", json=RIDE), 500, "server")
    problem = body["details"][0]["problem"]
    assert "boom" not in problem and "RuntimeError" not in problem and "registry" not in problem
    # the id in the body finds the traceback in the log, where the password is masked
    error_id = re.search(r"\b[0-9a-f]{12}\b", problem)
    assert error_id is not None, problem
    assert (
        error_id.group() in caplog.text
        and "boom reading http://***@registry.internal" in caplog.text
    )
    assert "s3cret-pw" not in caplog.text


def test_a_new_version_is_swapped_in(
    client: FlaskClient, source: FakeSource, serving: ModelHolder
) -> None:
    assert client.post("/predict", json=RIDE).get_json()["model"]["version"] == "1"
    source.alias_version = "2"
    assert serving.refresh() is True
    body = client.post("/predict", json=RIDE).get_json()
    assert body["model"]["version"] == "2"
    assert body["duration"] == pytest.approx(21.2)
    assert source.loads == ["1", "2"]
    assert serving.refresh() is False  # same version: nothing reloaded
    assert source.loads == ["1", "2"]


def test_a_recreated_model_with_the_same_version_number_is_loaded_again(
    client: FlaskClient, source: FakeSource, serving: ModelHolder
) -> None:
    # The registered model was deleted and trained again: its new version 1 is another model.
    assert client.post("/predict", json=RIDE).get_json()["model"]["version"] == "1"
    source.recreated = True
    assert serving.refresh() is True
    assert source.loads == ["1", "1"]
    assert serving.current is not None and serving.current.run_id == "run-1-recreated"


def test_a_broken_version_is_never_swapped_in(
    client: FlaskClient, source: FakeSource, serving: ModelHolder
) -> None:
    source.broken_versions.add("2")
    source.alias_version = "2"
    assert serving.refresh() is False
    assert serving.current is not None and serving.current.version == "1"
    assert "version 2 failed to load" in (serving.problem or "")
    assert client.post("/predict", json=RIDE).get_json()["model"]["version"] == "1"
    last_problem = client.get("/model").get_json()["last_problem"]
    assert last_problem.startswith("version 2 of model 'fake' under alias 'champion' failed")
    assert "answered" not in last_problem  # the exception text (warm_up's) stays in the log


def test_losing_the_registry_keeps_the_model(
    client: FlaskClient, source: FakeSource, serving: ModelHolder
) -> None:
    source.unreachable = True
    assert serving.refresh() is False
    assert client.get("/ready").status_code == 200
    assert "cannot ask the model registry" in (serving.problem or "")


def test_swaps_under_concurrent_requests_never_fail_or_mix_versions(
    app: Flask, source: FakeSource, serving: ModelHolder
) -> None:
    failures: list[str] = []
    answers: list[str] = []
    stop = threading.Event()

    def hammer() -> None:
        client = app.test_client()
        while not stop.is_set():
            response = client.post("/predict", json=[RIDE, RIDE])
            body = response.get_json()
            if response.status_code != 200:
                failures.append(f"{response.status_code} {body}")
                continue
            version = body["model"]["version"]
            expected = 10.0 * int(version) + RIDE["trip_distance"]
            if body["predictions"] != pytest.approx([expected, expected]):
                failures.append(f"version {version} answered {body['predictions']}")
            answers.append(version)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for version in range(2, 12):
            # let requests land on each version before the next swap
            answered = len(answers)
            wait_for(lambda answered=answered: len(answers) >= answered + 5, "requests")
            source.alias_version = str(version)
            assert serving.refresh() is True
        answered = len(answers)
        wait_for(lambda: len(answers) >= answered + 5, "requests after the last swap")
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert not failures
    assert serving.current is not None and serving.current.version == "11"
    assert set(answers) == {str(version) for version in range(1, 12)}


def test_the_poller_follows_the_alias_by_itself(source: FakeSource) -> None:
    polling = ModelHolder(source, reload_interval=0.05, retry_interval=0.05)
    polling.ensure_started()
    try:
        wait_for(lambda: "alias" in (polling.problem or ""), "the missing alias to be noticed")
        source.alias_version = "1"
        wait_for(lambda: polling.current is not None, "version 1 to be loaded")
        source.alias_version = "2"
        wait_for(lambda: polling.current.version == "2", "the swap to version 2")
    finally:
        polling.stop()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_metrics_count_requests_predictions_and_the_model_version(
    client: FlaskClient, serving: ModelHolder
) -> None:
    client.post("/predict", json=RIDE)
    client.post("/predict", json=[RIDE, RIDE, RIDE])
    client.post("/predict", json={**RIDE, "PULocationID": 0})
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    text = response.get_data(as_text=True)
    assert 'predict_http_requests_total{method="POST",route="/predict",status="200"} 2.0' in text
    assert 'predict_http_requests_total{method="POST",route="/predict",status="422"} 1.0' in text
    assert 'predict_rides_predicted_total{version="1"} 4.0' in text
    assert 'predict_http_request_duration_seconds_count{method="POST",route="/predict"' in text
    assert 'predict_model_info{alias="champion",name="fake",run_id="run-1",version="1"} 1.0' in text


def test_openapi_describes_every_route_and_the_error_shape(client: FlaskClient) -> None:
    spec = client.get("/openapi.json").get_json()
    routes = {rule.rule for rule in client.application.url_map.iter_rules()} - {
        "/static/<path:filename>"
    }
    assert routes <= set(spec["paths"])
    assert set(spec["components"]["schemas"]["Error"]["required"]) == {"error", "details"}
    predict = spec["paths"]["/predict"]["post"]["responses"]
    assert {"200", "400", "413", "415", "422", "503"} <= set(predict)
    assert spec["components"]["schemas"]["RideBatch"]["maxItems"] == 5


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_fuzzing_the_openapi_routes_never_gives_a_5xx_or_html(
    app: Flask, serving: ModelHolder, mode: GenerationMode
) -> None:
    # schemathesis' own pytest loader (from_fixture) breaks on pytest 9, so drive its case
    # strategy with hypothesis directly.
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)

    @given(case=schema.as_strategy(generation_mode=mode))
    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    def call(case) -> None:  # noqa: ANN001 - a schemathesis Case
        response = case.call()
        assert response.status_code < 500, response.text
        # schemathesis' response headers: lower-case names, lists of values
        content_type = response.headers.get("content-type", [""])[0]
        assert content_type.startswith(("application/json", "text/plain")), (
            case.method,
            case.path,
            response.status_code,
            content_type,
        )

    call()
