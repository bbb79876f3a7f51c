"""The run report published as Prefect artifacts: markdown for people, a table for comparison."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from nyctaxi import names
from nyctaxi.cleaning import CleanedMonth
from nyctaxi.names import ENGINE_IN_PROCESS as IN_PROCESS

Role = Literal["train", "validation"]


@dataclass(frozen=True)
class MonthSummary:
    """A month as one run used it: the cleaned month's facts plus the role this run gave it."""

    month: str
    role: Role
    sha256: str
    rows_read: int
    rows_kept: int
    dropped: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, cleaned: CleanedMonth, role: Role) -> MonthSummary:
        return cls(role=role, **dataclasses.asdict(cleaned))


@dataclass(frozen=True)
class RunReport:
    model_name: str
    model_version: str
    alias: str
    reason: str
    val_rmse: float
    val_mae: float
    champion_version: str | None
    champion_rmse: float | None
    train_seconds: float
    months: tuple[MonthSummary, ...]
    run_url: str | None
    engine: str = IN_PROCESS  # where the booster was fitted
    workers: int = 1


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def _where(report: RunReport) -> str:
    if report.engine == IN_PROCESS:
        return IN_PROCESS
    return f"on {report.engine} ({report.workers} worker{'s' if report.workers != 1 else ''})"


def render_markdown(report: RunReport) -> str:
    """A short, self-explanatory markdown report of one training run."""
    verdict = (
        "promoted to **champion**"
        if report.alias == names.CHAMPION_ALIAS
        else "kept as **challenger**"
    )
    champion = (
        f"v{report.champion_version}" if report.champion_version is not None else "none (first)"
    )
    lines = [
        f"# {report.model_name} v{report.model_version}: {verdict}",
        "",
        f"_{report.reason}_",
        "",
        "| | this version | champion before |",
        "|---|---|---|",
        f"| version | v{report.model_version} | {champion} |",
        f"| validation RMSE (min) | {_fmt(report.val_rmse)} | {_fmt(report.champion_rmse)} |",
        f"| validation MAE (min) | {_fmt(report.val_mae)} | |",
        f"| fit + evaluate (s) | {report.train_seconds:.2f} | |",
        f"| fitted | {_where(report)} | |",
        "",
        "## Data",
        "",
        "| month | role | rows read | rows kept | dropped by rule | sha256 |",
        "|---|---|---|---|---|---|",
    ]
    for month in report.months:
        dropped = ", ".join(f"{rule}: {count}" for rule, count in month.dropped.items() if count)
        lines.append(
            f"| {month.month} | {month.role} | {month.rows_read:,} | {month.rows_kept:,} "
            f"| {dropped or 'none'} | `{month.sha256[:12]}` |"
        )
    if report.run_url:
        lines += ["", f"MLflow run: [{report.run_url}]({report.run_url})"]
    return "\n".join(lines) + "\n"


def table_rows(report: RunReport) -> list[dict[str, object]]:
    """One row per month with the run's scores, for a Prefect table artifact."""
    return [
        {
            "model_version": report.model_version,
            "alias": report.alias,
            "month": month.month,
            "role": month.role,
            "rows_read": month.rows_read,
            "rows_kept": month.rows_kept,
            "rows_dropped": month.rows_read - month.rows_kept,
            "val_rmse": round(report.val_rmse, 4),
            "champion_rmse": None
            if report.champion_rmse is None
            else round(report.champion_rmse, 4),
        }
        for month in report.months
    ]
