"""Batch scoring's pure parts (nyctaxi.batch, batchmonths, batchio) and a whole month scored in
this process with a stand-in model: small frames and synthetic TLC-shaped months only."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nyctaxi import batch, batchio, batchrun, cleaning
from nyctaxi.batchmonths import default_month, months_to_score
from nyctaxi.batchreport import batch_result, render_markdown

MODEL = batch.ModelRef("nyc-taxi-duration", "7")
MONTH = "2023-02"


def distance_model(inputs: pd.DataFrame) -> np.ndarray:
    """A stand-in model: 3 minutes per mile."""
    return (3.0 * inputs["trip_distance"].to_numpy()).astype(np.float32)


def trips(rows: list[dict]) -> pd.DataFrame:
    good = {
        "lpep_pickup_datetime": pd.Timestamp("2023-02-10 08:00"),
        "lpep_dropoff_datetime": pd.Timestamp("2023-02-10 08:12"),
        "PULocationID": 74,
        "DOLocationID": 75,
        "trip_distance": 2.0,
    }
    return cleaning.normalize_dtypes(pd.DataFrame([{**good, **row} for row in rows]))


# plan_chunks ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("total", "size"), [(1, 10), (10, 10), (11, 10), (68_211, 25_000)])
def test_chunks_cover_every_row_once_in_nearly_equal_sizes(total: int, size: int) -> None:
    plan = batch.plan_chunks(total, size)
    assert plan[0].start == 0 and plan[-1].stop == total
    assert all(a.stop == b.start for a, b in zip(plan, plan[1:], strict=False))
    lengths = [len(r) for r in plan]
    assert max(lengths) <= size and max(lengths) - min(lengths) <= 1


def test_a_month_of_68k_rows_is_three_chunks_and_an_empty_file_none() -> None:
    assert [len(r) for r in batch.plan_chunks(68_211, 25_000)] == [22_737, 22_737, 22_737]
    assert batch.plan_chunks(0, 25_000) == []
    with pytest.raises(ValueError, match="chunk_rows"):
        batch.plan_chunks(10, 0)


# rows, ids and labels -------------------------------------------------------------------------


def test_ride_ids_are_the_month_and_the_row_in_the_file() -> None:
    ids = batch.ride_ids("2023-02", 25_000, np.array([0, 7]))
    assert ids.tolist() == [202302_000025_000, 202302_000025_007]
    other_month = batch.ride_ids("2023-03", 25_000, np.array([0]))
    assert other_month[0] != ids[0]


def test_rides_with_unusable_inputs_are_not_scored() -> None:
    frame = trips(
        [
            {},
            {"PULocationID": None},
            {"lpep_pickup_datetime": pd.Timestamp("2023-01-31 23:00")},  # previous month
            {"DOLocationID": 266},
            {"trip_distance": 61.0},
            {"trip_distance": float("inf")},
            {"lpep_dropoff_datetime": None},  # no label, but the inputs are usable
        ]
    )
    assert batch.scoreable_mask(frame, MONTH).tolist() == [1, 0, 0, 0, 0, 0, 1]


def test_a_ride_has_an_actual_duration_only_where_training_would_use_it() -> None:
    frame = trips(
        [
            {},
            {"lpep_dropoff_datetime": None},
            {"lpep_dropoff_datetime": pd.Timestamp("2023-02-10 08:00:30")},  # 0.5 minutes
            {"lpep_dropoff_datetime": pd.Timestamp("2023-02-10 09:01")},  # 61 minutes
        ]
    )
    actual = batch.actual_minutes(frame)
    assert actual.dtype == np.float32
    assert actual[0] == 12.0 and np.isnan(actual[1:]).all()


def test_labelled_rows_are_exactly_the_rows_cleaning_keeps(
    tlc_month: Callable[[str], Path],
) -> None:
    raw = cleaning.read_trips(tlc_month(MONTH))
    clean = cleaning.clean_trips(raw, MONTH, min_rows=0).trips
    table, summary = batch.score_rows(raw, MONTH, 0, distance_model, MODEL)
    scored = table.to_pandas()
    labelled = scored.dropna(subset=["actual_minutes"])
    assert summary.labelled == len(labelled) == len(clean)
    np.testing.assert_array_equal(labelled["actual_minutes"], cleaning.target(clean))
    assert summary.rows_read == len(raw) and len(raw) > summary.rows > summary.labelled


def test_a_chunk_gives_the_output_schema_and_its_squared_error() -> None:
    frame = trips(
        [{}, {"trip_distance": 4.0}, {"lpep_dropoff_datetime": None}, {"PULocationID": 0}]
    )
    table, summary = batch.score_rows(frame, MONTH, 100, distance_model, MODEL)
    assert table.schema.equals(batch.OUTPUT_SCHEMA)
    rows = table.to_pylist()
    assert [row["ride_id"] for row in rows] == [
        202302_000000_100,
        202302_000000_101,
        202302_000000_102,
    ]
    assert [row["predicted_minutes"] for row in rows] == [6.0, 12.0, 6.0]
    assert [row["actual_minutes"] for row in rows] == [12.0, 12.0, None]
    assert {(row["model_name"], row["model_version"], row["month"]) for row in rows} == {
        ("nyc-taxi-duration", "7", MONTH)
    }
    assert (summary.rows_read, summary.rows, summary.labelled) == (4, 3, 2)
    assert summary.squared_error == pytest.approx(6.0**2 + 0.0**2)


def test_a_model_returning_the_wrong_number_of_predictions_fails() -> None:
    with pytest.raises(ValueError, match="2 rows"):
        batch.score_rows(trips([{}, {}]), MONTH, 0, lambda x: np.zeros(1), MODEL)


def test_month_figures_add_up_the_chunks() -> None:
    chunks = [batch.ChunkSummary(0, 10, 8, 4, 16.0), batch.ChunkSummary(1, 10, 9, 0, 0.0)]
    month = batch.combine(MONTH, chunks, seconds=0.5)
    assert (month.rows_read, month.rows, month.labelled) == (20, 17, 4)
    assert month.rmse == pytest.approx(2.0)
    assert month.rows_per_second == pytest.approx(34.0)
    assert batch.combine(MONTH, chunks[1:], seconds=0.1).rmse is None


def test_a_month_missing_a_chunk_or_rows_is_never_complete() -> None:
    plan = batch.plan_chunks(20, 10)
    full = [batch.ChunkSummary(0, 10, 10, 0, 0.0), batch.ChunkSummary(1, 10, 10, 0, 0.0)]
    batch.check_complete(MONTH, plan, full, 20)
    with pytest.raises(batch.IncompleteMonthError, match=r"scored chunks \[0\]"):
        batch.check_complete(MONTH, plan, full[:1], 20)
    with pytest.raises(batch.IncompleteMonthError, match="chunk 1 read 9 rows of 10"):
        batch.check_complete(MONTH, plan, [full[0], batch.ChunkSummary(1, 9, 9, 0, 0.0)], 20)
    with pytest.raises(batch.IncompleteMonthError, match=r"scored chunks \[0, 0, 1\]"):
        batch.check_complete(MONTH, plan, [full[0], *full], 20)


# months --------------------------------------------------------------------------------------


def test_months_to_score() -> None:
    assert months_to_score("2023-02") == ["2023-02"]
    assert months_to_score(None, "2022-11", "2023-02") == [
        "2022-11",
        "2022-12",
        "2023-01",
        "2023-02",
    ]
    assert default_month(pd.Timestamp("2026-11-05").date()) == "2026-09"


@pytest.mark.parametrize(
    ("month", "first", "last", "message"),
    [
        ("2023-02", "2023-01", None, "not both"),
        (None, "2023-01", None, "both ends"),
        (None, None, None, "give a month"),
        (None, "2023-03", "2023-01", "ends"),
        (None, "2013-01", "2023-01", "more than 36"),
        ("2023-13", None, None, "1..12"),
    ],
)
def test_bad_months_are_refused(
    month: str | None, first: str | None, last: str | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        months_to_score(month, first, last)


# files ---------------------------------------------------------------------------------------


def test_reading_a_row_range_reads_those_rows_across_row_groups(tmp_path: Path) -> None:
    frame = trips([{"trip_distance": float(i)} for i in range(50)])
    path = tmp_path / "month.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=7)
    assert pq.ParquetFile(path).metadata.num_row_groups == 8
    part = batchio.read_rows(path, batch.RowRange(10, 33))
    assert part["trip_distance"].tolist() == [float(i) for i in range(10, 33)]
    pd.testing.assert_frame_equal(batchio.read_rows(path), frame)
    assert batchio.raw_row_count(path) == 50


def staged_month(root: Path, tables: list[pa.Table]) -> Path:
    staging = batchio.new_staging(root, MONTH)
    for index, table in enumerate(tables):
        batchio.write_part(staging, index, table)
    return staging


def test_staging_drops_stray_files_and_refuses_missing_parts(tmp_path: Path) -> None:
    table, _ = batch.score_rows(trips([{}, {}]), MONTH, 0, distance_model, MODEL)
    staging = staged_month(tmp_path, [table, table])
    (staging / ".part-00002.parquet.1234.tmp").write_bytes(b"half a part")  # a killed writer
    assert batchio.staged_rows(staging, 2) == {0: 2, 1: 2}
    assert sorted(p.name for p in staging.iterdir()) == ["part-00000.parquet", "part-00001.parquet"]
    with pytest.raises(batch.IncompleteMonthError, match="expected 0..2"):
        batchio.staged_rows(staging, 3)


def test_publishing_a_month_again_replaces_it(tmp_path: Path) -> None:
    table, _ = batch.score_rows(trips([{}, {}, {}]), MONTH, 0, distance_model, MODEL)
    batchio.publish(tmp_path, MONTH, staged_month(tmp_path, [table, table]))
    target = batchio.publish(tmp_path, MONTH, staged_month(tmp_path, [table]))
    assert [p.name for p in target.iterdir()] == ["part-00000.parquet"]
    assert len(pd.read_parquet(tmp_path)) == 3
    assert [p.name for p in (tmp_path / batchio.STAGING).iterdir()] == [f"month={MONTH}.lock"]


# a month in this process ---------------------------------------------------------------------


def test_a_month_scored_twice_holds_each_ride_once(
    tlc_month: Callable[[str], Path], tmp_path: Path
) -> None:
    source = tlc_month(MONTH)
    runs = [
        batchrun.score_month(source, MONTH, MODEL, tmp_path, chunk_rows=150, predict=distance_model)
        for _ in range(2)
    ]
    out = pd.read_parquet(tmp_path)
    assert runs[0].summary.rows == runs[1].summary.rows
    assert len(out) == runs[1].summary.rows and out["ride_id"].is_unique
    assert sorted(p.name for p in runs[1].output.iterdir()) == [
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
    assert runs[1].summary.rows_read == batchio.raw_row_count(source)
    assert out["month"].astype(str).unique().tolist() == [MONTH]
    result = batch_result(runs[1:], str(tmp_path))
    assert result.rows == len(out) and result.engine == "in-process"
    assert "| rides scored |" in render_markdown(result.months[0], result)


def test_a_failed_run_leaves_the_published_month_as_it_was(
    tlc_month: Callable[[str], Path], tmp_path: Path
) -> None:
    source = tlc_month(MONTH)
    batchrun.score_month(source, MONTH, MODEL, tmp_path, chunk_rows=150, predict=distance_model)
    before = pd.read_parquet(tmp_path)
    calls: list[int] = []

    def failing_model(inputs: pd.DataFrame) -> np.ndarray:
        calls.append(len(inputs))
        if len(calls) == 2:
            raise RuntimeError("model exploded")
        return distance_model(inputs) + 1

    with pytest.raises(RuntimeError, match="exploded"):
        batchrun.score_month(source, MONTH, MODEL, tmp_path, chunk_rows=150, predict=failing_model)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path), before)  # not one +1 prediction
    assert [p.name for p in (tmp_path / batchio.STAGING).iterdir()] == [f"month={MONTH}.lock"]
