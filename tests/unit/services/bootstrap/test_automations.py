"""The notification automations: what they listen to, and that their payloads render to JSON."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from uuid import uuid4

from prefect.automations import CallWebhook
from prefect.server.events.schemas.events import ReceivedEvent
from prefect.server.utilities.user_templates import render_user_template, validate_user_template

from services.bootstrap.automations import (
    CHAMPION_PROMOTED,
    FAILED_PAYLOAD,
    PROMOTED_PAYLOAD,
    TRAINING_FAILED,
    notification_automations,
)

MODEL = "nyctaxi.model.nyc-taxi-duration"


def render(template: str, event: ReceivedEvent) -> dict:
    validate_user_template(template)
    context = {"automation": {"name": "auto"}, "event": event}
    return json.loads(asyncio.run(render_user_template(template, context)))


def test_one_automation_per_notification_calling_the_webhook_block() -> None:
    block_id = uuid4()
    failed, promoted = notification_automations(block_id, MODEL)
    assert (failed.name, promoted.name) == (TRAINING_FAILED, CHAMPION_PROMOTED)
    for automation in (failed, promoted):
        [action] = automation.actions
        assert isinstance(action, CallWebhook)
        assert action.block_document_id == block_id
        assert automation.enabled


def test_failed_automation_listens_to_failed_and_crashed_training_runs_only() -> None:
    failed, _ = notification_automations(uuid4(), MODEL)
    trigger = failed.trigger
    assert trigger.expect == {"prefect.flow-run.Failed", "prefect.flow-run.Crashed"}
    assert trigger.match.model_dump() == {"prefect.resource.id": "prefect.flow-run.*"}
    assert trigger.match_related.model_dump() == {
        "prefect.resource.role": "flow",
        "prefect.resource.name": "training",
    }
    assert trigger.threshold == 1


def test_promoted_automation_listens_to_the_models_promotion_event() -> None:
    _, promoted = notification_automations(uuid4(), "nyctaxi.model.other-model")
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
