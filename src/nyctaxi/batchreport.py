"""What a batch run returns (the flow's result, the command's JSON) and its summary in Markdown
(the flow's artifact, the command's log)."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

from nyctaxi.batchrun import ScoredMonth


class MonthResult(BaseModel):
    """One scored month."""

    model_config = ConfigDict(frozen=True)

    month: str
    rows_read: int
    rows: int
    labelled: int
    rmse: float | None
    chunks: int
    seconds: float  # read + features + predict + write
    rows_per_second: float
    output: str


class BatchResult(BaseModel):
    """A whole run: its months and their totals."""

    model_config = ConfigDict(frozen=True)

    model_name: str
    model_version: str
    engine: str  # "dask" or "in-process"
    workers: int
    output: str  # the root folder: one month=YYYY-MM partition per month
    rows: int
    rows_read: int
    seconds: float
    rows_per_second: float
    rmse: float | None
    months: list[MonthResult]


def month_result(scored: ScoredMonth) -> MonthResult:
    figures = scored.summary
    return MonthResult(
        month=figures.month,
        rows_read=figures.rows_read,
        rows=figures.rows,
        labelled=figures.labelled,
        rmse=round(figures.rmse, 6) if figures.rmse is not None else None,
        chunks=figures.chunks,
        seconds=round(figures.seconds, 4),
        rows_per_second=round(figures.rows_per_second, 1),
        output=str(scored.output),
    )


def batch_result(scored: Sequence[ScoredMonth], output: str) -> BatchResult:
    if not scored:
        raise ValueError("no month was scored")
    figures = [s.summary for s in scored]
    rows = sum(f.rows for f in figures)
    seconds = sum(f.seconds for f in figures)
    labelled = sum(f.labelled for f in figures)
    squared_error = sum(f.squared_error for f in figures)
    return BatchResult(
        model_name=scored[0].model.name,
        model_version=scored[0].model.version,
        engine=scored[0].engine,
        workers=max(s.workers for s in scored),
        output=output,
        rows=rows,
        rows_read=sum(f.rows_read for f in figures),
        seconds=round(seconds, 4),
        rows_per_second=round(rows / seconds, 1) if seconds > 0 else 0.0,
        rmse=round((squared_error / labelled) ** 0.5, 6) if labelled else None,
        months=[month_result(s) for s in scored],
    )


def render_markdown(month: MonthResult, result: BatchResult) -> str:
    """The summary artifact of one month."""
    rmse = f"{month.rmse:.4f}" if month.rmse is not None else "n/a (no labelled rides)"
    rows = [
        ("model", f"{result.model_name} v{result.model_version}"),
        ("engine", f"{result.engine} ({result.workers} worker(s))"),
        ("rides read", f"{month.rows_read:,}"),
        ("rides scored", f"{month.rows:,}"),
        ("rides with a label", f"{month.labelled:,}"),
        ("RMSE (minutes, labelled rides)", rmse),
        ("chunks", str(month.chunks)),
        ("seconds (read, features, predict, write)", f"{month.seconds:.3f}"),
        ("rows/s", f"{month.rows_per_second:,.0f}"),
        ("output", f"`{month.output}`"),
    ]
    table = "\n".join(f"| {name} | {value} |" for name, value in rows)
    return f"# Batch predictions {month.month}\n\n| | |\n|---|---|\n{table}\n"
