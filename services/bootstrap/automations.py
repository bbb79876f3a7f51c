"""Prefect automations: crash detection, and notifications through the webhook.

Crash detection (always on): a flow run emits a `prefect.flow-run.heartbeat` event every
FLOW_RUN_HEARTBEAT_SECONDS (PREFECT_FLOWS_HEARTBEAT_FREQUENCY on the workers); a deployment's
run that misses FLOW_RUN_MISSED_HEARTBEATS of them in a row without reaching a final state is
marked Crashed (Prefect's "detect zombie flows" recipe). Its process is gone: a worker or
machine killed hard leaves nobody to report the end of the run. `crash_silent_runs` applies the
same rule once, at bootstrap, to runs the automation cannot see (silent since before it existed).

Four notifications (when NOTIFY_WEBHOOK_URL is set), each calling the `Webhook` block with a
JSON body:
- a training flow run ends Failed or Crashed (crash detection's Crashed included);
- the training flow promotes a new champion (it emits the `nyctaxi.model.promoted` event);
- a prediction worker refuses a version (`nyctaxi.model.refused`: failed to load or warm up);
- the monitoring flow finds the champion degraded (`nyctaxi.model.degraded`, with its figures).
The retraining that answers a degraded model is no notification: see retraining.py.

The specs are built by pure functions (unit-tested); `apply_automations` upserts them by name so
the bootstrap can run any number of times without duplicating them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from uuid import UUID

from prefect.automations import (
    AutomationCore,
    CallWebhook,
    ChangeFlowRunState,
    EventTrigger,
    Posture,
)
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
    WorkPoolFilter,
    WorkPoolFilterName,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.events.filters import (
    EventFilter,
    EventNameFilter,
    EventOccurredFilter,
    EventResourceFilter,
)
from prefect.states import Crashed

from nyctaxi.names import DEGRADED_EVENT, PROMOTED_EVENT, REFUSED_EVENT, TRAINING_FLOW, WORK_POOL

logger = logging.getLogger(__name__)

CRASH_SILENT_RUNS = "nyctaxi-crash-silent-runs"
TRAINING_FAILED = "nyctaxi-training-failed"
CHAMPION_PROMOTED = "nyctaxi-champion-promoted"
MODEL_REFUSED = "nyctaxi-model-refused"
MODEL_DEGRADED = "nyctaxi-model-degraded"
# The notifications, removed when NOTIFY_WEBHOOK_URL is unset; crash detection and the
# retraining automation stay.
AUTOMATION_NAMES = (TRAINING_FAILED, CHAMPION_PROMOTED, MODEL_REFUSED, MODEL_DEGRADED)
FAILED_EVENTS = frozenset({"prefect.flow-run.Failed", "prefect.flow-run.Crashed"})
HEARTBEAT_EVENT = "prefect.flow-run.heartbeat"
# A heartbeat or the end of the run answers a heartbeat; anything else is silence.
FINAL_EVENTS = frozenset(
    f"prefect.flow-run.{state}" for state in ("Completed", "Failed", "Cancelled", "Crashed")
)

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


def model_event_payload(kind: str) -> str:
    """The body for an event about a model: the event's own payload passed on as it is."""
    return (
        "{\n"
        f'  "kind": "{kind}",\n'
        '  "automation": {{ automation.name | tojson }},\n'
        '  "event": {{ event.event | tojson }},\n'
        '  "occurred": {{ event.occurred | string | tojson }},\n'
        '  "model": {{ event.resource.id | tojson }},\n'
        '  "payload": {{ event.payload | tojson }}\n'
        "}"
    )


PROMOTED_PAYLOAD = model_event_payload("champion-promoted")
# The event's payload holds version, run_id and reason (services/predict).
REFUSED_PAYLOAD = model_event_payload("model-refused")
# The event's payload holds version, month, the figures and the reason (flows/monitoring.py).
DEGRADED_PAYLOAD = model_event_payload("model-degraded")


def silence_message(heartbeat_seconds: int, missed_heartbeats: int) -> str:
    """The Crashed state's message (the failure notification quotes it)."""
    return (
        f"no heartbeat for {heartbeat_seconds * missed_heartbeats} s ({missed_heartbeats} missed "
        f"heartbeats of {heartbeat_seconds} s): the flow run's process is gone (worker or "
        "machine killed?)"
    )


def crash_detection_automation(heartbeat_seconds: int, missed_heartbeats: int) -> AutomationCore:
    """Marks a deployment's flow run Crashed when its heartbeats stop before it ends.

    Proactive: after each heartbeat, a run must send another one (or end) within the window.
    Only runs of deployments (those a worker starts, with the period the stacks give it): a flow
    run by hand against the server beats at Prefect's default (180 s) and would be marked
    Crashed while alive.
    """
    trigger = EventTrigger(
        after={HEARTBEAT_EVENT},
        expect={HEARTBEAT_EVENT, *FINAL_EVENTS},
        match={"prefect.resource.id": "prefect.flow-run.*"},
        match_related={"prefect.resource.role": "deployment"},
        for_each={"prefect.resource.id"},
        posture=Posture.Proactive,
        threshold=1,
        within=timedelta(seconds=heartbeat_seconds * missed_heartbeats),
    )
    action = ChangeFlowRunState(
        state=StateType.CRASHED,
        message=silence_message(heartbeat_seconds, missed_heartbeats),
    )
    return AutomationCore(
        name=CRASH_SILENT_RUNS,
        description=(
            f"Mark a flow run Crashed after {missed_heartbeats} missed heartbeats "
            f"({heartbeat_seconds} s apart)."
        ),
        enabled=True,
        trigger=trigger,
        actions=[action],
    )


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


def model_event_automation(
    name: str, event: str, description: str, webhook_block_id: UUID, payload: str, model: str
) -> AutomationCore:
    """Fires on every `event` about the model (resource id `model`)."""
    trigger = EventTrigger(
        expect={event},
        match={"prefect.resource.id": model},
        posture=Posture.Reactive,
        threshold=1,
    )
    return webhook_automation(name, description, trigger, webhook_block_id, payload)


def notification_automations(
    webhook_block_id: UUID, model_resource_id: str
) -> list[AutomationCore]:
    return [
        training_failed_automation(webhook_block_id),
        model_event_automation(
            CHAMPION_PROMOTED,
            PROMOTED_EVENT,
            f"Notify the webhook when {model_resource_id} gets a new champion.",
            webhook_block_id,
            PROMOTED_PAYLOAD,
            model_resource_id,
        ),
        model_event_automation(
            MODEL_REFUSED,
            REFUSED_EVENT,
            f"Notify the webhook when a prediction worker refuses a {model_resource_id} version.",
            webhook_block_id,
            REFUSED_PAYLOAD,
            model_resource_id,
        ),
        model_event_automation(
            MODEL_DEGRADED,
            DEGRADED_EVENT,
            f"Notify the webhook when monitoring finds {model_resource_id} degraded.",
            webhook_block_id,
            DEGRADED_PAYLOAD,
            model_resource_id,
        ),
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
    """Delete the named automations (by default the notifications, switched off); return how
    many were deleted."""
    deleted = 0
    for name in names:
        for automation in client.read_automations_by_name(name):
            assert automation.id is not None
            client.delete_automation(automation.id)
            deleted += 1
    if deleted:
        logger.info("deleted %d automation(s) named %s", deleted, ", ".join(names))
    return deleted


# The bootstrap's sweep: the automation only watches runs whose heartbeats it has seen since it
# exists, so a run that went silent before (a stack from before crash detection, a worker killed
# before its run's first beat) would stay Running and block the first training for ever.
def silent_runs(
    runs: Iterable[FlowRun], beating: set[str], now: datetime, window: timedelta
) -> list[FlowRun]:
    """Running runs with no heartbeat within `window` (`beating`: the resource ids that sent
    one) that have been Running longer than `window` (a younger run may not have beaten yet)."""
    silent = []
    for run in runs:
        state = run.state
        if state is None or state.type != StateType.RUNNING:
            continue
        if f"prefect.flow-run.{run.id}" in beating:
            continue
        if state.timestamp is not None and now - state.timestamp <= window:
            continue
        silent.append(run)
    return silent


def recent_heartbeats(client: SyncPrefectClient, runs: list[FlowRun], since: datetime) -> set[str]:
    """Resource ids of the runs that sent a heartbeat since `since` (one query per run: a
    handful of Running runs, and no page of one run's beats can hide another's)."""
    beating = set()
    for run in runs:
        resource_id = f"prefect.flow-run.{run.id}"
        page = client.read_events(
            EventFilter(
                occurred=EventOccurredFilter(since=since),
                event=EventNameFilter(name=[HEARTBEAT_EVENT]),
                resource=EventResourceFilter(id=[resource_id]),
            ),
            limit=1,
        )
        if page.events:
            beating.add(resource_id)
    return beating


def crash_silent_runs(
    client: SyncPrefectClient, heartbeat_seconds: int, missed_heartbeats: int
) -> int:
    """Mark the work pool's silent Running runs Crashed; return how many."""
    running = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING]))
        ),
        work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[WORK_POOL])),
        limit=200,
    )
    window = timedelta(seconds=heartbeat_seconds * missed_heartbeats)
    now = datetime.now(UTC)
    silent = silent_runs(running, recent_heartbeats(client, running, now - window), now, window)
    message = silence_message(heartbeat_seconds, missed_heartbeats)
    for run in silent:
        client.set_flow_run_state(run.id, Crashed(message=message))
        logger.warning("flow run %s (%s): marked Crashed, %s", run.name, run.id, message)
    return len(silent)
