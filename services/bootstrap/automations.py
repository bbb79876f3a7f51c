"""Prefect automations that call the notification webhook.

Two automations, both calling the `Webhook` block named in settings with a JSON body:
- a training flow run ends Failed or Crashed;
- the training flow promotes a new champion (it emits the `nyctaxi.model.promoted` event).

The specs are built by pure functions (unit-tested); `apply_automations` upserts them by name so
the bootstrap can run any number of times without duplicating them.
"""

from __future__ import annotations

import logging
from uuid import UUID

from prefect.automations import AutomationCore, CallWebhook, EventTrigger, Posture
from prefect.client.orchestration import SyncPrefectClient

from nyctaxi.names import PROMOTED_EVENT, TRAINING_FLOW

logger = logging.getLogger(__name__)

TRAINING_FAILED = "nyctaxi-training-failed"
CHAMPION_PROMOTED = "nyctaxi-champion-promoted"
AUTOMATION_NAMES = (TRAINING_FAILED, CHAMPION_PROMOTED)
FAILED_EVENTS = frozenset({"prefect.flow-run.Failed", "prefect.flow-run.Crashed"})

# Jinja templates rendered by the Prefect server; `tojson` keeps every value valid JSON
# whatever a state message contains.
FAILED_PAYLOAD = """{
  "kind": "training-run-failed",
  "automation": {{ automation.name | tojson }},
  "event": {{ event.event | tojson }},
  "occurred": {{ event.occurred | string | tojson }},
  "flow_run": {
    "id": {{ event.resource.id | tojson }},
    "name": {{ event.resource.name | tojson }},
    "state": {{ event.resource["prefect.state-name"] | tojson }},
    "message": {{ event.resource["prefect.state-message"] | tojson }}
  }
}"""

PROMOTED_PAYLOAD = """{
  "kind": "champion-promoted",
  "automation": {{ automation.name | tojson }},
  "event": {{ event.event | tojson }},
  "occurred": {{ event.occurred | string | tojson }},
  "model": {{ event.resource.id | tojson }},
  "payload": {{ event.payload | tojson }}
}"""


def webhook_automation(
    name: str, description: str, trigger: EventTrigger, webhook_block_id: UUID, payload: str
) -> AutomationCore:
    """An enabled automation that POSTs `payload` to the webhook block when `trigger` fires."""
    return AutomationCore(
        name=name,
        description=description,
        enabled=True,
        trigger=trigger,
        actions=[CallWebhook(block_document_id=webhook_block_id, payload=payload)],
    )


def training_failed_automation(webhook_block_id: UUID) -> AutomationCore:
    """Fires once per training flow run that ends Failed or Crashed."""
    trigger = EventTrigger(
        expect=set(FAILED_EVENTS),
        match={"prefect.resource.id": "prefect.flow-run.*"},
        match_related={"prefect.resource.role": "flow", "prefect.resource.name": TRAINING_FLOW},
        posture=Posture.Reactive,
        threshold=1,
    )
    description = f"Notify the webhook when a '{TRAINING_FLOW}' flow run fails or crashes."
    return webhook_automation(
        TRAINING_FAILED, description, trigger, webhook_block_id, FAILED_PAYLOAD
    )


def champion_promoted_automation(webhook_block_id: UUID, model_resource_id: str) -> AutomationCore:
    """Fires on every `nyctaxi.model.promoted` event of the model."""
    trigger = EventTrigger(
        expect={PROMOTED_EVENT},
        match={"prefect.resource.id": model_resource_id},
        posture=Posture.Reactive,
        threshold=1,
    )
    description = f"Notify the webhook when {model_resource_id} gets a new champion."
    return webhook_automation(
        CHAMPION_PROMOTED, description, trigger, webhook_block_id, PROMOTED_PAYLOAD
    )


def notification_automations(
    webhook_block_id: UUID, model_resource_id: str
) -> list[AutomationCore]:
    return [
        training_failed_automation(webhook_block_id),
        champion_promoted_automation(webhook_block_id, model_resource_id),
    ]


def apply_automations(client: SyncPrefectClient, automations: list[AutomationCore]) -> None:
    """Create each automation, or update the one with the same name (extra copies are removed)."""
    for automation in automations:
        existing = client.read_automations_by_name(automation.name)
        if not existing:
            client.create_automation(automation)
            logger.info("created automation %s", automation.name)
            continue
        keep, *duplicates = existing
        assert keep.id is not None
        client.update_automation(keep.id, automation)
        for duplicate in duplicates:
            assert duplicate.id is not None
            client.delete_automation(duplicate.id)
        logger.info("updated automation %s", automation.name)


def remove_automations(client: SyncPrefectClient, names: tuple[str, ...] = AUTOMATION_NAMES) -> int:
    """Delete our automations (notifications switched off); return how many were deleted."""
    deleted = 0
    for name in names:
        for automation in client.read_automations_by_name(name):
            assert automation.id is not None
            client.delete_automation(automation.id)
            deleted += 1
    if deleted:
        logger.info("notifications off: deleted %d automation(s)", deleted)
    return deleted
