"""Model registry: the promotion gate and the MLflow alias moves that carry it out.

The decision itself (`decide_promotion`) is a pure function; the rest is a thin layer over
`MlflowClient` so the flow never touches aliases directly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from nyctaxi import names

CHAMPION = names.CHAMPION_ALIAS
CHALLENGER = names.CHALLENGER_ALIAS

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PromotionDecision:
    """Which alias a new version gets, and why (the report quotes `reason`)."""

    alias: str
    reason: str
    champion_version: str | None = None
    champion_rmse: float | None = None

    @property
    def promoted(self) -> bool:
        return self.alias == CHAMPION


def decide_promotion(
    new_rmse: float,
    *,
    val_month: str,
    champion_version: str | None,
    champion_rmse: float | None,
) -> PromotionDecision:
    """Promote only a strictly better model; both RMSEs are measured on the same validation rows."""
    if champion_version is None or champion_rmse is None:
        return PromotionDecision(CHAMPION, "no champion yet: the first version becomes champion")
    if new_rmse < champion_rmse:
        reason = (
            f"validation RMSE {new_rmse:.4f} beats champion v{champion_version}'s "
            f"{champion_rmse:.4f} on {val_month}"
        )
        return PromotionDecision(CHAMPION, reason, champion_version, champion_rmse)
    reason = (
        f"validation RMSE {new_rmse:.4f} does not beat champion v{champion_version}'s "
        f"{champion_rmse:.4f} on {val_month}; kept as challenger"
    )
    return PromotionDecision(CHALLENGER, reason, champion_version, champion_rmse)


def version_with_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version carrying `alias`, or None when the model or the alias does not exist."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as error:
        if error.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"}:
            return None
        raise


def apply_decision(
    client: MlflowClient,
    name: str,
    version: str,
    decision: PromotionDecision,
    val_rmse: float,
    *,
    train_month: str,
    val_month: str,
) -> None:
    """Tag the new version with its months and score, and move the decided alias onto it."""
    client.set_model_version_tag(name, version, "val_rmse", f"{val_rmse:.6f}")
    client.set_model_version_tag(name, version, "train_month", train_month)
    client.set_model_version_tag(name, version, "val_month", val_month)
    client.set_model_version_tag(name, version, "promotion", decision.reason)
    client.set_registered_model_alias(name, decision.alias, version)
    if decision.promoted and decision.champion_version is not None:
        # The version that lost the alias says why, too (its own `promotion` tag stays).
        client.set_model_version_tag(
            name, decision.champion_version, "replaced", f"by v{version}: {decision.reason}"
        )
    logger.info("model %s v%s -> @%s (%s)", name, version, decision.alias, decision.reason)
