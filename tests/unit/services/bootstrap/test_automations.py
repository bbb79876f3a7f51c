"""The automations: what they listen to, what they do, and that their payloads render to JSON;
the bootstrap's sweep of runs that stopped beating."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from prefect.automations import CallWebhook, ChangeFlowRunState, Posture
from prefect.client.schemas.objects import FlowRun, State, StateType
from prefect.server.events.schemas.events import ReceivedEvent
from prefect.server.utilities.user_templates import render_user_template, validate_user_template
from pydantic import ValidationError

from services.bootstrap.automations import (
    AUTOMATION_NAMES,
    CHAMPION_PROMOTED,
    CRASH_SILENT_RUNS,
    DEGRADED_PAYLOAD,
    FAILED_PAYLOAD,
    MODEL_DEGRADED,
    MODEL_REFUSED,
    PROMOTED_PAYLOAD,
    REFUSED_PAYLOAD,
    TRAINING_FAILED,
    crash_detection_automation,
    notification_automations,
    silent_runs,
)
from services.bootstrap.settings import BootstrapSettings

MODEL = "nyctaxi.model.nyc-taxi-duration"


def render(template: str, event: ReceivedEvent) -> dict:
    validate_user_template(template)
    context = {"automation": {"name": "auto"}, "event": event}
    return json.loads(asyncio.run(render_user_template(template, context)))


def test_one_automation_per_notification_calling_the_webhook_block() -> None:
    block_id = uuid4()
    automations = notification_automations(block_id, MODEL)
    assert [a.name for a in automations] == [
        TRAINING_FAILED,
        CHAMPION_PROMOTED,
        MODEL_REFUSED,
        MODEL_DEGRADED,
    ]
    assert CRASH_SILENT_RUNS not in AUTOMATION_NAMES  # no webhook: notifications go, not this
    for automation in automations:
        [action] = automation.actions
        assert isinstance(action, CallWebhook)
        assert action.block_document_id == block_id
        assert automation.enabled


def test_failed_automation_listens_to_failed_and_crashed_training_runs_only() -> None:
    failed, *_ = notification_automations(uuid4(), MODEL)
    trigger = failed.trigger
    assert trigger.expect == {"prefect.flow-run.Failed", "prefect.flow-run.Crashed"}
    assert trigger.match.model_dump() == {"prefect.resource.id": "prefect.flow-run.*"}
    assert trigger.match_related.model_dump() == {
        "prefect.resource.role": "flow",
        "prefect.resource.name": "training",
    }
    assert trigger.threshold == 1


def test_promoted_automation_listens_to_the_models_promotion_event() -> None:
    _, promoted, _, _ = notification_automations(uuid4(), "nyctaxi.model.other-model")
    assert promoted.trigger.expect == {"nyctaxi.model.promoted"}
    assert promoted.trigger.match.model_dump() == {
        "prefect.resource.id": "nyctaxi.model.other-model"
    }


def test_failed_payload_is_json_whatever_the_state_message_holds() -> None:
    message = 'month "2031-01" not found <anywhere> & \\ nowhere'
    event = ReceivedEvent(
        occurred=datetime.now(UTC),
        event="prefect.flow-run.Failed",
        resource={
            "prefect.resource.id": "prefect.flow-run.1234",
            "prefect.resource.name": "brave-otter",
            "prefect.state-name": "Failed",
            "prefect.state-message": message,
        },
        id=uuid4(),
    )
    body = render(FAILED_PAYLOAD, event)
    assert body["kind"] == "training-run-failed"
    assert body["flow_run"] == {
        "id": "prefect.flow-run.1234",
        "name": "brave-otter",
        "state": "Failed",
        "message": message,
    }


def test_promoted_payload_carries_the_event_payload() -> None:
    event = ReceivedEvent(
        occurred=datetime.now(UTC),
        event="nyctaxi.model.promoted",
        resource={"prefect.resource.id": MODEL},
        payload={"version": "7", "val_rmse": 4.87},
        id=uuid4(),
    )
    body = render(PROMOTED_PAYLOAD, event)
    assert body["kind"] == "champion-promoted"
    assert body["model"] == MODEL
    assert body["payload"] == {"version": "7", "val_rmse": 4.87}


def test_refused_automation_listens_to_the_models_refusal_event() -> None:
    _, _, refused, _ = notification_automations(uuid4(), "nyctaxi.model.other-model")
    assert refused.trigger.expect == {"nyctaxi.model.refused"}
    assert refused.trigger.match.model_dump() == {
        "prefect.resource.id": "nyctaxi.model.other-model"
    }
    assert refused.trigger.posture == Posture.Reactive


def test_refused_payload_says_which_version_and_why() -> None:
    reason = 'warm-up failed: "ValueError: bad input" <x>'
    event = ReceivedEvent(
        occurred=datetime.now(UTC),
        event="nyctaxi.model.refused",
        resource={"prefect.resource.id": MODEL},
        payload={"version": "9", "run_id": "abc123", "reason": reason},
        id=uuid4(),
    )
    body = render(REFUSED_PAYLOAD, event)
    assert body["kind"] == "model-refused"
    assert body["model"] == MODEL
    assert body["payload"] == {"version": "9", "run_id": "abc123", "reason": reason}


def test_degraded_automation_listens_to_the_models_degraded_event() -> None:
    *_, degraded = notification_automations(uuid4(), "nyctaxi.model.other-model")
    assert degraded.name == MODEL_DEGRADED
    assert degraded.trigger.expect == {"nyctaxi.model.degraded"}
    assert degraded.trigger.match.model_dump() == {
        "prefect.resource.id": "nyctaxi.model.other-model"
    }
    assert degraded.trigger.posture == Posture.Reactive


def test_degraded_payload_passes_the_figures_on() -> None:
    payload = {
        "model": "nyc-taxi-duration",
        "version": "3",
        "month": "2021-02",
        "train_month": "2021-01",
        "val_month": "2021-02",
        "reason": 'rmse 7.9 > 1.1 x val_rmse 5.2 "drift" <0.6>',
        "rmse": 7.9,
        "val_rmse": 5.2,
        "rmse_ratio": 1.52,
        "drift_share": 0.6,
    }
    event = ReceivedEvent(
        occurred=datetime.now(UTC),
        event="nyctaxi.model.degraded",
        resource={"prefect.resource.id": MODEL},
        payload=payload,
        id=uuid4(),
    )
    body = render(DEGRADED_PAYLOAD, event)
    assert body["kind"] == "model-degraded"
    assert body["model"] == MODEL
    assert body["payload"] == payload


def test_crash_detection_expects_a_beat_or_an_end_within_the_missed_beats() -> None:
    automation = crash_detection_automation(heartbeat_seconds=30, missed_heartbeats=3)
    trigger = automation.trigger
    assert automation.name == CRASH_SILENT_RUNS and automation.enabled
    assert trigger.posture == Posture.Proactive
    assert trigger.after == {"prefect.flow-run.heartbeat"}
    assert trigger.expect == {
        "prefect.flow-run.heartbeat",
        "prefect.flow-run.Completed",
        "prefect.flow-run.Failed",
        "prefect.flow-run.Cancelled",
        "prefect.flow-run.Crashed",
    }
    assert trigger.for_each == {"prefect.resource.id"}  # one count per flow run
    assert trigger.match.model_dump() == {"prefect.resource.id": "prefect.flow-run.*"}
    # Runs a worker started (at the stack's period), not flows run by hand at Prefect's 180 s.
    assert trigger.match_related.model_dump() == {"prefect.resource.role": "deployment"}
    assert trigger.within == timedelta(seconds=90)
    [action] = automation.actions
    assert isinstance(action, ChangeFlowRunState)
    assert action.state == StateType.CRASHED
    assert "3 missed heartbeats of 30 s" in (action.message or "")


def test_heartbeat_settings_keep_to_prefects_minimum_and_at_least_two_missed_beats() -> None:
    settings = BootstrapSettings(_env_file=None)
    assert (settings.flow_run_heartbeat_seconds, settings.flow_run_missed_heartbeats) == (30, 3)
    with pytest.raises(ValidationError):
        BootstrapSettings(_env_file=None, flow_run_heartbeat_seconds=10)
    with pytest.raises(ValidationError):
        BootstrapSettings(_env_file=None, flow_run_missed_heartbeats=1)


NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
WINDOW = timedelta(seconds=90)


def run_in(state_type: StateType, since: timedelta) -> FlowRun:
    state = State(type=state_type, timestamp=NOW - since)
    return FlowRun(id=uuid4(), flow_id=uuid4(), name=f"run-{since.seconds}", state=state)


def test_a_running_run_without_a_beat_in_the_window_is_silent() -> None:
    gone = run_in(StateType.RUNNING, timedelta(minutes=30))
    beating = run_in(StateType.RUNNING, timedelta(minutes=30))
    young = run_in(StateType.RUNNING, timedelta(seconds=20))  # may not have beaten yet
    pending = run_in(StateType.PENDING, timedelta(minutes=30))
    done = run_in(StateType.COMPLETED, timedelta(minutes=30))
    runs = [gone, beating, young, pending, done]
    found = silent_runs(runs, {f"prefect.flow-run.{beating.id}"}, NOW, WINDOW)
    assert found == [gone]
