"""The retraining automation: what it listens to, which deployment it runs, and the parameters
the Prefect server renders from the degraded event (with the server's own code)."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import pytest
from prefect.automations import Posture, RunDeployment
from prefect.server.events.actions import RunDeployment as ServerRunDeployment
from prefect.server.events.schemas.automations import AutomationCore as ServerAutomationCore
from prefect.server.events.schemas.events import ReceivedEvent
from prefect.utilities.schema_tools.hydration import HydrationContext, hydrate

from services.bootstrap.automations import AUTOMATION_NAMES
from services.bootstrap.retraining import RETRAIN_ON_DEGRADED, retrain_on_degraded_automation
from services.bootstrap.settings import BootstrapSettings

MODEL = "nyctaxi.model.nyc-taxi-duration"


def degraded_event(**payload: object) -> ReceivedEvent:
    return ReceivedEvent(
        occurred=datetime.now(UTC),
        event="nyctaxi.model.degraded",
        resource={"prefect.resource.id": MODEL},
        payload=payload,
        id=uuid4(),
    )


def rendered_parameters(action: RunDeployment, event: ReceivedEvent) -> dict[str, object]:
    """What the server's RunDeployment.render_parameters makes of the parameters: the same
    hydration, with the triggering event in the Jinja context."""
    server_action = ServerRunDeployment.model_validate(action.model_dump(mode="json"))
    parameters = dict(server_action.parameters or {})
    ServerRunDeployment._upgrade_v1_templates(parameters)
    context = HydrationContext(
        render_jinja=True, jinja_context={"event": event}, raise_on_error=True
    )
    return hydrate(parameters, context)


def test_retraining_answers_the_models_degraded_event_with_the_training_deployment() -> None:
    deployment_id = uuid4()
    automation = retrain_on_degraded_automation(deployment_id, MODEL)
    assert automation.name == RETRAIN_ON_DEGRADED and automation.enabled
    trigger = automation.trigger
    assert trigger.expect == {"nyctaxi.model.degraded"}
    assert trigger.match.model_dump() == {"prefect.resource.id": MODEL}
    assert trigger.posture == Posture.Reactive and trigger.threshold == 1
    [action] = automation.actions
    assert isinstance(action, RunDeployment)
    assert (action.source, action.deployment_id) == ("selected", deployment_id)


def test_the_server_accepts_the_automation() -> None:
    automation = retrain_on_degraded_automation(uuid4(), MODEL)
    accepted = ServerAutomationCore.model_validate(automation.model_dump(mode="json"))
    [action] = accepted.actions
    assert isinstance(action, ServerRunDeployment)


def test_parameters_are_the_months_and_the_reason_of_the_event() -> None:
    [action] = retrain_on_degraded_automation(uuid4(), MODEL).actions
    reason = 'rmse 7.91 > 1.10 x val_rmse 5.20; drift 0.62 > 0.50 "inputs" <&>'
    event = degraded_event(
        model="nyc-taxi-duration",
        version="3",
        month="2021-02",
        train_month="2021-01",
        val_month="2021-02",
        reason=reason,
        rmse=7.91,
        drift_share=0.62,
    )
    assert rendered_parameters(action, event) == {
        "train_month": "2021-01",
        "val_month": "2021-02",
        "retrain_reason": reason,
    }


def test_a_reason_that_looks_like_a_number_stays_text() -> None:
    [action] = retrain_on_degraded_automation(uuid4(), MODEL).actions
    event = degraded_event(train_month="2021-01", val_month="2021-02", reason="1.5")
    assert rendered_parameters(action, event)["retrain_reason"] == "1.5"


def test_retraining_is_no_notification_and_on_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert RETRAIN_ON_DEGRADED not in AUTOMATION_NAMES  # a stack without webhook keeps it
    assert BootstrapSettings(_env_file=None).retrain_on_degraded
    monkeypatch.setenv("RETRAIN_ON_DEGRADED", "false")
    assert not BootstrapSettings(_env_file=None).retrain_on_degraded
