"""The automation closing the loop: a degraded champion is answered with a training run.

The monitoring flow emits `nyctaxi.model.degraded` when the champion does worse on a month than
the thresholds allow; its payload names the months a retraining should use (`train_month`: the
month before, `val_month`: the monitored month) and why (`reason`). This automation runs the
stack's training deployment with them; the training flow's gate then decides whether the new
version is promoted, and the prediction service swaps to it.

It is no notification: it exists with or without NOTIFY_WEBHOOK_URL (RETRAIN_ON_DEGRADED=false
removes it, and monitoring only reports).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from prefect.automations import AutomationCore, EventTrigger, Posture, RunDeployment

from nyctaxi.names import DEGRADED_EVENT

RETRAIN_ON_DEGRADED = "nyctaxi-retrain-on-degraded"


def payload_field(name: str) -> dict[str, str]:
    """A parameter rendered by the Prefect server from the triggering event's payload.

    The explicit `jinja` kind renders to text (the months and the reason are strings); a bare
    "{{ ... }}" string would also work (the server wraps it in `json` + `tojson`), but this form
    says what it is and cannot turn a value into another type.
    """
    return {"__prefect_kind": "jinja", "template": f"{{{{ event.payload.{name} }}}}"}


def retrain_parameters() -> dict[str, Any]:
    """The training flow's parameters, from the event (the deployment's defaults fill the rest,
    such as data_source)."""
    return {
        "train_month": payload_field("train_month"),
        "val_month": payload_field("val_month"),
        "retrain_reason": payload_field("reason"),
    }


def retrain_on_degraded_automation(deployment_id: UUID, model_resource_id: str) -> AutomationCore:
    """Runs the training deployment once per `nyctaxi.model.degraded` event of the model.

    One run per event (reactive, threshold 1): each degraded month names its own months; the
    promotion limit serialises the runs' promotions, and the gate compares each with the
    champion of the moment.
    """
    trigger = EventTrigger(
        expect={DEGRADED_EVENT},
        match={"prefect.resource.id": model_resource_id},
        posture=Posture.Reactive,
        threshold=1,
    )
    action = RunDeployment(
        source="selected", deployment_id=deployment_id, parameters=retrain_parameters()
    )
    return AutomationCore(
        name=RETRAIN_ON_DEGRADED,
        description=(
            f"Retrain {model_resource_id} when monitoring finds it degraded: train on the month "
            "before the monitored month, validate on it."
        ),
        enabled=True,
        trigger=trigger,
        actions=[action],
    )
