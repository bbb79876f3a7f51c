"""Monitor a range of months, oldest first, one run at a time: what `make monitor-backfill` runs.

    python -m stack.backfill --from 2023-01 --to 2023-06

Each month is a run of monitoring/monitor-month on the running stack (as `make monitor` starts
it, through stack.trigger), waited for before the next one starts: each run judges the champion
of its moment, which a degraded month may replace (the retraining automation's run). The first
run that does not complete stops the backfill.

Exit status: 0 when every month's run completed; 1 when one ended otherwise (which month, why,
and the months left); 2 for a malformed month, FROM after TO, or the deployment not registered;
130 on Ctrl-C (the current run goes on).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from nyctaxi.months import parse_month
from nyctaxi.names import MONITOR_MONTH_DEPLOYMENT, MONITORING_FLOW
from stack.trigger import Outcome, TriggerError, run_cli, trigger

DEPLOYMENT = f"{MONITORING_FLOW}/{MONITOR_MONTH_DEPLOYMENT}"
Say = Callable[[str], None]
Run = Callable[[str, dict[str, object], Say], Outcome]


class BackfillError(ValueError):
    """The months cannot be monitored as asked; the message says why."""


def month_range(first: str, last: str) -> list[str]:
    """Every month from `first` to `last`, both included, oldest first ("YYYY-MM")."""
    if not first.strip() or not last.strip():
        raise BackfillError("both FROM and TO are needed, e.g. FROM=2023-01 TO=2023-06")
    try:
        start, end = parse_month(first), parse_month(last)
    except ValueError as error:
        raise BackfillError(f"{error} (FROM and TO are months like 2023-01)") from None
    if start > end:
        raise BackfillError(f"FROM ({start}) is after TO ({end}): give the older month first")
    months = [start]
    while months[-1] < end:
        months.append(months[-1].next())
    return [str(month) for month in months]


def backfill(months: list[str], say: Say, run: Run) -> Outcome:
    """Run the monitoring deployment for each month in turn; stop at the first that fails."""
    for index, month in enumerate(months, start=1):
        say(f"[{index}/{len(months)}] monitoring {month}")
        result = run(DEPLOYMENT, {"month": month}, say)
        if result.exit_code != 0:
            left = months[index:]
            not_run = f"; not monitored: {', '.join(left)}" if left else ""
            return Outcome(result.exit_code, f"stopped at {month}: {result.line}{not_run}")
        say(f"  {result.line}")
    return Outcome(0, f"monitored {len(months)} month(s), {months[0]} to {months[-1]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=f"Run {DEPLOYMENT} for each month from FROM to TO, one after the other."
    )
    parser.add_argument("--from", dest="first", required=True, metavar="YYYY-MM")
    parser.add_argument("--to", dest="last", required=True, metavar="YYYY-MM")
    args = parser.parse_args(argv)

    return run_cli(
        lambda say: backfill(month_range(args.first, args.last), say, trigger),
        (BackfillError, TriggerError),
    )


if __name__ == "__main__":
    sys.exit(main())
