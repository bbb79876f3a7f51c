"""The monitoring report published as Prefect artifacts: the verdict in markdown, the figures as
a table (one row per column for drift, one per borough and hour for errors)."""

from __future__ import annotations

from nyctaxi.config import Thresholds
from nyctaxi.drift import DISTANCE_THRESHOLD
from nyctaxi.monitoring import DRIFT_INPUTS, PREDICTION
from nyctaxi.monitorpipeline import Assessment


def _fmt(value: float | None, pattern: str = "{:.4f}") -> str:
    return "—" if value is None else pattern.format(value)


def render_markdown(
    assessment: Assessment,
    thresholds: Thresholds,
    *,
    run_url: str | None,
    retraining: str | None,
) -> str:
    """Verdict first, then the figures behind it and where the full report is."""
    champion = assessment.champion
    verdict = "**degraded**" if assessment.verdict.degraded else "**fine**"
    lines = [
        f"# {champion.name} v{champion.version} on {assessment.subject}: {verdict}",
        "",
        f"_{assessment.verdict.summary}_",
        "",
    ]
    if retraining:
        lines += [retraining, ""]
    lines += [
        "| | value | threshold |",
        "|---|---|---|",
        f"| rides monitored | {assessment.rows:,} | |",
        f"| reference: training month {champion.train_month} | "
        f"{assessment.reference_rows:,} rides | |",
    ]
    if assessment.rmse is not None:
        ratio = assessment.rmse_ratio
        limit = f"+{thresholds.rmse_increase:.0%} over validation"
        lines += [
            f"| RMSE (min) | {_fmt(assessment.rmse)} | {limit} |",
            f"| champion's validation RMSE ({champion.val_month or '?'}) "
            f"| {_fmt(champion.val_rmse)} | |",
            f"| RMSE / validation RMSE | {_fmt(ratio, '{:.3f}')} | "
            f"{1 + thresholds.rmse_increase:.2f} |",
            f"| MAE (min) | {_fmt(assessment.mae)} | |",
        ]
    drifted = ", ".join(assessment.drift.drifted_inputs) or "none"
    lines += [
        f"| drifted inputs | {assessment.drift.drift_share:.0%} ({drifted}) "
        f"| {thresholds.drift_share:.0%} |",
        f"| prediction drift | {_fmt(assessment.drift.prediction_drift, '{:.3f}')} "
        f"| {DISTANCE_THRESHOLD} |",
        "",
        "Drift: normed Wasserstein distance (numerical columns), Jensen-Shannon distance "
        f"(categorical), against the training month; a column drifted at >= {DISTANCE_THRESHOLD}.",
    ]
    if run_url:
        lines += ["", f"Evidently report and error tables: MLflow run [{run_url}]({run_url})"]
    return "\n".join(lines) + "\n"


def drift_rows(assessment: Assessment) -> list[dict[str, object]]:
    """One row per column: its drift distance and whether it drifted."""
    distances = assessment.drift.distances
    return [
        {
            "column": column,
            "kind": "prediction" if column == PREDICTION else "input",
            "distance": round(distances[column], 4),
            "drifted": distances[column] >= DISTANCE_THRESHOLD,
        }
        for column in [*DRIFT_INPUTS, PREDICTION]
    ]


def error_rows(assessment: Assessment) -> list[dict[str, object]]:
    """Errors by borough then by hour, one row per group."""
    rows: list[dict[str, object]] = []
    for name, table in assessment.tables.items():
        key = table.columns[0]
        for record in table.to_dict("records"):
            rows.append(
                {
                    "group": name.removeprefix("by_"),
                    "value": str(record[key]),
                    "rides": int(record["rides"]),
                    "rmse": round(float(record["rmse"]), 4),
                    "mae": round(float(record["mae"]), 4),
                    "bias": round(float(record["bias"]), 4),
                }
            )
    return rows
