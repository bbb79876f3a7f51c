"""The nyctaxi.model.refused event: its shape (Prefect's Event model) and how it is sent."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import requests

from nyctaxi import names
from services.predict.backoff import Refusal
from services.predict.events import PrefectEvents, refusal_notifier, refused_event
from services.predict.redact import short_reason
from services.predict.settings import PredictSettings

REFUSAL = Refusal(
    version="4",
    run_id="abc123",
    attempts=2,
    reason="warm-up failed (ValueError)",
    detail="warm-up: ValueError: model answered nan",
    delay=10.0,
    retry_at=0.0,
)


def test_the_event_is_a_valid_prefect_event_about_the_model() -> None:
    from prefect.events.schemas.events import Event

    body = refused_event("nyc-taxi-duration", "champion", REFUSAL, pid=42, host="web-1")
    event = Event.model_validate(body)
    assert event.event == names.REFUSED_EVENT
    assert event.resource.id == names.model_resource_id("nyc-taxi-duration")
    assert event.payload == {
        "model": "nyc-taxi-duration",
        "alias": "champion",
        "version": "4",
        "run_id": "abc123",
        "reason": "warm-up: ValueError: model answered nan",
        "attempts": 2,
        "next_retry_seconds": 10.0,
        "worker": {"pid": 42, "host": "web-1"},
    }


def test_a_short_reason_names_no_location_nor_credential(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "hunter22")
    error = OSError(
        "GET http://predictor:hunter22@mlflow:5000/api/x failed\n for models:/m/3 "
        "(s3://bucket/key) password hunter22" + " and more" * 50
    )
    reason = short_reason("download", error)
    assert reason.startswith("download: OSError: GET <uri> failed for <uri> (<uri>)")
    assert "hunter22" not in reason and "mlflow:5000" not in reason and "\n" not in reason
    assert len(reason) <= 200 and reason.endswith("...")


class FakeResponse:
    def __init__(self, status: int, body: dict[str, Any] | None = None) -> None:
        self.status_code = status
        self._body = body or {}

    def json(self) -> dict[str, Any]:
        return self._body

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise requests.HTTPError(f"{self.status_code} from the server")


class FakeSession:
    """requests.Session's get/post, answering like a Prefect server."""

    def __init__(self, csrf_status: int = 200, post_error: Exception | None = None) -> None:
        self.auth: tuple[str, str] | None = None
        self.csrf_status = csrf_status
        self.post_error = post_error
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def get(self, url: str, **kwargs: Any) -> FakeResponse:
        self.calls.append(("GET", url, kwargs))
        if self.csrf_status != 200:
            return FakeResponse(self.csrf_status, {"detail": "CSRF protection is disabled."})
        return FakeResponse(200, {"token": "tok-1", "expiration": "2099-01-01T00:00:00Z"})

    def post(self, url: str, **kwargs: Any) -> FakeResponse:
        self.calls.append(("POST", url, kwargs))
        if self.post_error:
            raise self.post_error
        return FakeResponse(204)


def test_the_event_is_posted_with_basic_auth_and_the_csrf_token() -> None:
    session = FakeSession()
    events = PrefectEvents("http://prefect:4200/api/", "admin:pw", session=session)  # type: ignore[arg-type]
    event = refused_event("m", "champion", REFUSAL, pid=1, host="h")
    assert events.send(event) is True
    assert session.auth == ("admin", "pw")
    (_, csrf_url, csrf), (_, post_url, post) = session.calls
    assert csrf_url == "http://prefect:4200/api/csrf-token"
    assert post_url == "http://prefect:4200/api/events"
    assert post["json"] == [event]
    client = csrf["params"]["client"]
    assert post["headers"] == {"Prefect-Csrf-Token": "tok-1", "Prefect-Csrf-Client": client}
    assert post["timeout"] and csrf["timeout"]


def test_without_csrf_protection_no_token_is_sent() -> None:
    session = FakeSession(csrf_status=422)
    events = PrefectEvents("http://prefect:4200/api", None, session=session)  # type: ignore[arg-type]
    assert events.send(refused_event("m", "a", REFUSAL, pid=1, host="h")) is True
    assert session.auth is None
    assert session.calls[-1][2]["headers"] == {}


def test_a_failed_send_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    session = FakeSession(post_error=requests.ConnectionError("http://admin:pw@prefect refused"))
    events = PrefectEvents("http://prefect:4200/api", "admin:pw", session=session)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING):
        assert events.send(refused_event("m", "a", REFUSAL, pid=1, host="h")) is False
    assert "could not send the nyctaxi.model.refused event" in caplog.text
    assert "admin:pw" not in caplog.text


def test_events_are_sent_only_when_a_prefect_api_is_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    assert refusal_notifier(PredictSettings(prefect_api_url=None)) is None
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(PrefectEvents, "emit", lambda self, event: sent.append(event))
    notify = refusal_notifier(
        PredictSettings(model_name="m", prefect_api_url="http://p/api", prefect_api_auth_string="")
    )
    assert notify is not None
    notify(REFUSAL)
    assert [event["payload"]["version"] for event in sent] == ["4"]
