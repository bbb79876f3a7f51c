"""The prediction log's layout, schema and reader (nyctaxi.predictionlog), on small batches."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from nyctaxi import predictionlog
from nyctaxi.features import RAW_COLUMNS, frame_feature_matrix
from nyctaxi.predictionlog import Record, build_batch, read_window, write_batch

DAY = datetime(2024, 5, 1, tzinfo=UTC)


def us(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


def record(request_id: str, rides: int, served: datetime, version: str = "3") -> Record:
    return Record(
        request_id=request_id,
        served_at_us=us(served),
        pu_location_id=np.arange(1, rides + 1, dtype=np.int32),
        do_location_id=np.full(rides, 151, dtype=np.int32),
        trip_distance=np.linspace(0.5, 3.0, rides),
        pickup=np.full(rides, np.datetime64("2024-05-01T08:15:00", "us")),
        prediction=np.full(rides, 7.5, dtype=np.float32),
        model_name="nyc-taxi-duration",
        model_version=version,
    )


def test_the_folder_is_the_variable_else_under_the_home(tmp_path: Path) -> None:
    assert predictionlog.log_dir(str(tmp_path / "log"), Path("/home")) == tmp_path / "log"
    for unset in (None, "", "  "):
        assert predictionlog.log_dir(unset, tmp_path) == tmp_path / "prediction-log"


def test_a_batch_has_one_row_per_ride_in_order_with_the_schema() -> None:
    table = build_batch([record("a", 1, DAY), record("b", 3, DAY + timedelta(seconds=2))])
    assert table.schema == predictionlog.SCHEMA
    frame = table.to_pandas()
    assert frame["request_id"].tolist() == ["a", "b", "b", "b"]
    assert frame["ride_index"].tolist() == [0, 0, 1, 2]
    assert frame["PULocationID"].tolist() == [1.0, 1.0, 2.0, 3.0]
    assert frame["served_at"].iloc[3] == pd.Timestamp(DAY + timedelta(seconds=2))
    assert frame["lpep_pickup_datetime"].iloc[0] == pd.Timestamp("2024-05-01 08:15")
    assert frame["prediction"].tolist() == [7.5] * 4
    assert set(frame["model_version"]) == {"3"}
    # the raw columns are the TLC ones: the monitoring flow computes features from them
    assert set(RAW_COLUMNS) <= set(frame.columns)
    assert frame_feature_matrix(frame).shape == (4, 10)


def test_missing_inputs_stay_missing() -> None:
    ride = record("a", 2, DAY)
    gaps = Record(
        **{
            **{name: getattr(ride, name) for name in Record.__slots__},
            "pu_location_id": np.array([np.nan, 43.0]),
            "pickup": np.array(["NaT", "2024-05-01T08:15"], dtype="datetime64[us]"),
        }
    )
    frame = build_batch([gaps]).to_pandas()
    assert np.isnan(frame["PULocationID"].iloc[0]) and frame["PULocationID"].iloc[1] == 43.0
    assert pd.isna(frame["lpep_pickup_datetime"].iloc[0])


def test_written_batches_read_back_by_window(tmp_path: Path) -> None:
    written = write_batch(tmp_path, build_batch([record("a", 2, DAY + timedelta(hours=1))]), DAY)
    write_batch(tmp_path, build_batch([record("b", 1, DAY + timedelta(hours=2))]), DAY)
    assert [p.parent.name for p in written] == ["date=2024-05-01"]
    assert not [p for p in tmp_path.rglob(".*")], "no temporary file is left"
    frame = read_window(tmp_path, DAY, DAY + timedelta(days=1))
    assert frame["request_id"].tolist() == ["a", "a", "b"]
    assert list(frame.columns) == list(predictionlog.COLUMNS)
    # [since, until): the second batch's exact time is excluded as `until`, included as `since`
    until_b = read_window(tmp_path, DAY, DAY + timedelta(hours=2))
    assert until_b["request_id"].tolist() == ["a", "a"]
    assert read_window(tmp_path, DAY + timedelta(hours=2), DAY + timedelta(days=2))[
        "request_id"
    ].tolist() == ["b"]


def test_a_flush_across_midnight_goes_to_both_days(tmp_path: Path) -> None:
    late, early = DAY - timedelta(seconds=1), DAY + timedelta(seconds=1)
    paths = write_batch(
        tmp_path, build_batch([record("late", 1, late), record("early", 1, early)]), DAY
    )
    assert sorted(p.parent.name for p in paths) == ["date=2024-04-30", "date=2024-05-01"]
    assert read_window(tmp_path, DAY - timedelta(hours=1), DAY)["request_id"].tolist() == ["late"]
    assert read_window(tmp_path, DAY, DAY + timedelta(hours=1))["request_id"].tolist() == ["early"]


def test_naive_window_bounds_are_utc(tmp_path: Path) -> None:
    write_batch(tmp_path, build_batch([record("a", 1, DAY + timedelta(hours=5))]), DAY)
    naive = DAY.replace(tzinfo=None)
    assert len(read_window(tmp_path, naive, naive + timedelta(hours=6))) == 1
    new_york = DAY.astimezone(pd.Timestamp("2024-05-01", tz="America/New_York").tzinfo)
    assert len(read_window(tmp_path, new_york, new_york + timedelta(hours=6))) == 1


def test_only_the_days_of_the_window_are_read_and_dot_files_never(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_batch(tmp_path, build_batch([record("a", 1, DAY + timedelta(hours=1))]), DAY)
    folder = tmp_path / "date=2024-05-01"
    (folder / ".half-written.parquet").write_bytes(b"PAR1 partial")  # a writer's temp file
    (tmp_path / "date=2024-05-03").mkdir()
    (tmp_path / "date=2024-05-03" / "broken.parquet").write_bytes(b"junk")  # another day
    with caplog.at_level(logging.WARNING):
        frame = read_window(tmp_path, DAY, DAY + timedelta(days=1))
    assert frame["request_id"].tolist() == ["a"]
    assert not caplog.records, "neither the dot-file nor another day's file was opened"


def test_a_corrupt_file_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_batch(tmp_path, build_batch([record("a", 2, DAY + timedelta(hours=1))]), DAY)
    broken = tmp_path / "date=2024-05-01" / "zz-truncated.parquet"
    broken.write_bytes(b"not parquet at all")
    with caplog.at_level(logging.WARNING, logger="nyctaxi.predictionlog"):
        frame = read_window(tmp_path, DAY, DAY + timedelta(days=1))
    assert len(frame) == 2
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert str(broken) in caplog.records[0].getMessage()


def test_no_ride_gives_an_empty_frame_shaped_like_a_full_one(tmp_path: Path) -> None:
    write_batch(tmp_path, build_batch([record("a", 1, DAY + timedelta(hours=1))]), DAY)
    full = read_window(tmp_path, DAY, DAY + timedelta(days=1))
    for empty in (
        read_window(tmp_path / "no-such-folder", DAY, DAY + timedelta(days=1)),
        read_window(tmp_path, DAY + timedelta(days=3), DAY + timedelta(days=4)),
        read_window(tmp_path, DAY + timedelta(days=1), DAY),  # an empty window
    ):
        assert empty.empty
        assert empty.dtypes.to_dict() == full.dtypes.to_dict()


def test_a_failed_write_raises_and_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(table: pa.Table, where: Path, **options: object) -> None:
        Path(where).write_bytes(b"PAR1 half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(predictionlog.pq, "write_table", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_batch(tmp_path, build_batch([record("a", 1, DAY)]), DAY)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_file_names_are_unique_per_writer(tmp_path: Path) -> None:
    table = build_batch([record("a", 1, DAY)])
    names = {p.name for _ in range(5) for p in write_batch(tmp_path, table, DAY)}
    assert len(names) == 5
    assert len(read_window(tmp_path, DAY, DAY + timedelta(days=1))) == 5


def test_a_buffer_takes_whole_requests_while_they_fit() -> None:
    buffer = predictionlog.RideBuffer(capacity=5)
    rides = record("a", 3, DAY)
    inputs = (rides.pu_location_id, rides.do_location_id, rides.trip_distance, rides.pickup)
    model = ("nyc-taxi-duration", "3")
    assert buffer.append("a", rides.served_at_us, inputs, rides.prediction, model)
    assert not buffer.append("b", rides.served_at_us, inputs, rides.prediction, model)  # 6 > 5
    assert buffer.rows == 3
    one = tuple(column[:2] for column in inputs)
    assert buffer.append("c", rides.served_at_us, one, rides.prediction[:2], model)  # 5 fits
    frame = buffer.to_table().to_pandas()
    assert frame["request_id"].tolist() == ["a", "a", "a", "c", "c"]
    assert frame["ride_index"].tolist() == [0, 1, 2, 0, 1]
    assert predictionlog.RideBuffer(3).to_table().num_rows == 0
