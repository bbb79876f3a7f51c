from nyctaxi.cleaning import CleanedMonth
from nyctaxi.report import MonthSummary, RunReport, render_markdown, table_rows


def make_report(alias: str = "champion", champion_rmse: float | None = 5.1) -> RunReport:
    months = (
        MonthSummary("2023-01", "train", "a" * 64, 68211, 66000, {"duration": 2000, "zone": 211}),
        MonthSummary("2023-02", "validation", "b" * 64, 64809, 63000, {"duration": 1809}),
    )
    return RunReport(
        "nyc-taxi-duration",
        "4",
        alias,
        "because",
        4.61234,
        3.1,
        "3",
        champion_rmse,
        0.9,
        months,
        "http://mlflow:5000/#/experiments/1/runs/abc",
    )


def test_markdown_names_version_verdict_scores_months_and_link() -> None:
    text = render_markdown(make_report())
    assert text.startswith("# nyc-taxi-duration v4: promoted to **champion**")
    assert "| validation RMSE (min) | 4.6123 | 5.1000 |" in text
    assert (
        "| 2023-01 | train | 68,211 | 66,000 | duration: 2000, zone: 211 | `aaaaaaaaaaaa` |" in text
    )
    assert "http://mlflow:5000/#/experiments/1/runs/abc" in text


def test_markdown_for_challenger_and_first_version() -> None:
    text = render_markdown(make_report(alias="challenger", champion_rmse=None))
    assert "kept as **challenger**" in text
    assert "| validation RMSE (min) | 4.6123 | — |" in text


def test_table_has_one_row_per_month_with_dropped_counts() -> None:
    rows = table_rows(make_report())
    assert [row["month"] for row in rows] == ["2023-01", "2023-02"]
    assert rows[0]["rows_dropped"] == 2211
    assert rows[1]["val_rmse"] == 4.6123


def test_a_month_summary_takes_the_role_from_the_run_not_from_the_cleaned_month() -> None:
    cleaned = CleanedMonth("2023-02", "b" * 64, 64809, 63000, {"duration": 1809})
    as_validation = MonthSummary.of(cleaned, "validation")
    as_training = MonthSummary.of(cleaned, "train")
    assert (as_validation.role, as_training.role) == ("validation", "train")
    assert as_training.rows_kept == as_validation.rows_kept == 63000
    assert not hasattr(cleaned, "role")


def test_the_report_says_where_the_model_was_fitted() -> None:
    import dataclasses

    from nyctaxi.report import RunReport, render_markdown

    report = RunReport("m", "2", "champion", "first", 4.0, 3.0, None, None, 1.5, (), None)
    assert "| fitted | in-process |" in render_markdown(report)
    on_dask = dataclasses.replace(report, engine="dask", workers=2)
    assert "| fitted | on dask (2 workers) |" in render_markdown(on_dask)
