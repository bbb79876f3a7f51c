"""The optional bearer token (PREDICT_API_TOKEN): which routes need it, the 401 answers, the
OpenAPI document, and the token never echoed or logged."""

from __future__ import annotations

import logging

import pytest
from flask.testing import FlaskClient
from pydantic import SecretStr

from services.predict import auth
from services.predict.app import create_app
from services.predict.holder import ModelHolder
from services.predict.settings import PredictSettings
from tests.unit.services.predict.fakes import RIDE, assert_error

TOKEN = "t0ken-for-the-unit-tests"
REALM = 'Bearer realm="nyctaxi-predict"'
PROTECTED = [("POST", "/predict"), ("GET", "/model"), ("GET", "/metrics"), ("HEAD", "/metrics")]
OPEN = ["/health", "/ready", "/openapi.json"]


@pytest.fixture
def service_settings() -> PredictSettings:
    return PredictSettings(model_name="fake", api_token=SecretStr(TOKEN))


def call(client: FlaskClient, method: str, path: str, authorization: str | None = None):  # noqa: ANN201
    headers = {"Authorization": authorization} if authorization is not None else {}
    body = RIDE if method == "POST" else None
    return client.open(path, method=method, json=body, headers=headers)


@pytest.mark.usefixtures("serving")
@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_protected_routes_need_the_header(client: FlaskClient, method: str, path: str) -> None:
    response = call(client, method, path)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == REALM
    if method != "HEAD":
        assert_error(response, 401, "Authorization")


@pytest.mark.usefixtures("serving")
@pytest.mark.parametrize(("method", "path"), PROTECTED)
@pytest.mark.parametrize("sent", ["Bearer wrong-token", f"Bearer {TOKEN}x", "Bearer ", "Bearer"])
def test_a_wrong_token_is_an_invalid_token(
    client: FlaskClient, method: str, path: str, sent: str
) -> None:
    response = call(client, method, path, sent)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == f'{REALM}, error="invalid_token"'
    if method != "HEAD":
        body = assert_error(response, 401, "Authorization")
        assert "wrong-token" not in response.get_data(as_text=True)
        assert body["details"][0]["problem"] == "the bearer token is not valid"


@pytest.mark.usefixtures("serving")
def test_another_scheme_is_asked_for_a_bearer_token(client: FlaskClient) -> None:
    response = call(client, "GET", "/model", f"Basic {TOKEN}")
    assert_error(response, 401, "Authorization")
    assert response.headers["WWW-Authenticate"] == REALM


@pytest.mark.usefixtures("serving")
@pytest.mark.parametrize(("method", "path"), PROTECTED)
@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_the_right_token_passes(client: FlaskClient, method: str, path: str, scheme: str) -> None:
    response = call(client, method, path, f"{scheme} {TOKEN}")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert "WWW-Authenticate" not in response.headers


@pytest.mark.usefixtures("serving")
@pytest.mark.parametrize("path", OPEN)
def test_probes_and_the_api_document_stay_open(client: FlaskClient, path: str) -> None:
    assert client.get(path).status_code == 200


@pytest.mark.usefixtures("serving")
def test_unknown_routes_and_methods_keep_their_404_and_405(client: FlaskClient) -> None:
    assert_error(client.get("/nowhere"), 404, "path")
    assert_error(client.get("/predict"), 405, "method")
    assert client.options("/predict").status_code == 200  # preflights carry no credentials


def test_without_a_token_nothing_is_protected(
    serving: ModelHolder, holder: ModelHolder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    client = create_app(PredictSettings(model_name="fake", api_token=None), holder).test_client()
    for method, path in PROTECTED:
        assert call(client, method, path).status_code == 200


@pytest.mark.usefixtures("serving")
def test_the_token_is_compared_in_constant_time(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = auth.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    assert call(client, "GET", "/model", f"Bearer {TOKEN}").status_code == 200
    assert call(client, "GET", "/model", "Bearer nope").status_code == 401
    assert len(calls) == 2


@pytest.mark.usefixtures("serving")
def test_the_token_is_never_logged(client: FlaskClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for sent in (f"Bearer {TOKEN}", "Bearer a-wrong-token-value"):
        for method, path in PROTECTED:
            call(client, method, path, sent)
    client.post("/predict", json={"broken": True}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert TOKEN not in caplog.text and "a-wrong-token-value" not in caplog.text


def test_the_api_document_names_the_scheme_and_the_401s(client: FlaskClient) -> None:
    spec = client.get("/openapi.json").get_json()
    scheme = spec["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    for path, operations in spec["paths"].items():
        for operation in operations.values():
            protected = path in {"/predict", "/model", "/metrics"}
            assert ("security" in operation) is protected, path
            assert ("401" in operation["responses"]) is protected, path
    assert spec["paths"]["/predict"]["post"]["security"] == [{"bearerAuth": []}]
    assert TOKEN not in client.get("/openapi.json").get_data(as_text=True)


def test_the_api_document_of_an_open_service_asks_for_no_token(
    holder: ModelHolder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    client = create_app(PredictSettings(model_name="fake", api_token=None), holder).test_client()
    spec = client.get("/openapi.json").get_json()
    assert all(
        "security" not in op and "401" not in op["responses"]
        for operations in spec["paths"].values()
        for op in operations.values()
    )


@pytest.mark.parametrize(("value", "expected"), [(TOKEN, TOKEN), (f" {TOKEN}\n", TOKEN)])
def test_the_token_comes_from_predict_api_token(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: str
) -> None:
    monkeypatch.setenv("PREDICT_API_TOKEN", value)
    settings = PredictSettings()
    assert settings.api_token is not None
    assert settings.api_token.get_secret_value() == expected
    assert TOKEN not in repr(settings) and TOKEN not in str(settings)


@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_predict_api_token_means_no_token(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("PREDICT_API_TOKEN", value)
    assert PredictSettings().api_token is None
