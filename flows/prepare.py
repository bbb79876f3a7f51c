"""The cached task that prepares a month (read, normalise, clean), shared by the flows.

Its own module because the training flow sends it to the Dask workers and the monitoring flow
runs it too. (Deployments name their flows by module path, `flows.training.flow:training_flow`,
not by file: a file entrypoint is loaded as a script module named `flow` that no Dask worker can
import, and the flow run's context, flow included, travels with every task it sends there.)
"""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.context import TaskRunContext

from nyctaxi import monthcache
from nyctaxi.cleaning import PreparedMonth
from nyctaxi.locate import IngestedMonth


def _prepare_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """Everything the cleaned month depends on, and nothing else (nyctaxi.monthcache)."""
    ingested: IngestedMonth = parameters["ingested"]
    return monthcache.cache_key(ingested.month, ingested.sha256)


@task(cache_key_fn=_prepare_cache_key, persist_result=True)
def prepare_month(ingested: IngestedMonth) -> PreparedMonth:
    """Read, normalise and clean one month; the dropped-rows counts go to the log and the report.

    Cached: the same file is prepared once whatever role later runs give it."""
    prepared = monthcache.prepare_ingested(ingested)
    facts = prepared.facts
    get_run_logger().info(
        "%s: kept %d of %d rows; dropped %s",
        facts.month,
        facts.rows_kept,
        facts.rows_read,
        dict(facts.dropped),
    )
    return prepared
