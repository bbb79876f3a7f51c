"""Soak: steady load on /predict for 10 minutes while the champion alias moves every 2 minutes.

    .venv/bin/python bench/soak.py                            # a throwaway stack, 10 min
    .venv/bin/python bench/soak.py --minutes 2 --swap-every 30
    .venv/bin/python bench/soak.py --predict-url http://127.0.0.1:9696 \\
        --tracking-uri http://127.0.0.1:5000                  # soak a running stack (make run)

By default it starts a throwaway MLflow tracking server and the prediction service (gunicorn,
PREDICT_WORKERS=2, one OpenMP thread per worker, as bench/serving.py does) on free loopback
ports, and registers two versions trained on real TLC months: v1 on 2023-01 and v2 on 2023-02,
v2 shipping its own copy of the nyctaxi code (one comment apart) so that every move to it takes
the service's load-its-own-code path (fresh modules, sys.path restored). It then sends single
rides to /predict at a fixed rate (open loop, default 100 req/s from 4 keep-alive client
threads; loopback only) and moves `champion` between the versions every --swap-every seconds.

It prints one comparison against minute 1 of the same run: requests, non-2xx and unanswered
requests, p50/p99 latency per swap window (client side, so a little above the server's), when
the answers followed each alias move, each worker's RSS (median of 5-s samples of VmRSS of the
gunicorn master's children in /proc) in minute 1 vs the last minute, and each worker's sys.path
length at start vs end (the service's per-worker gauge predict_worker_sys_path_entries: under
gunicorn's prometheus multiprocess mode "liveall" each live worker's value carries its `pid`
label; 'n/a' when the service has no such gauge).
Exits 1 when a bar fails: 0 non-2xx and 0 unanswered, RSS <= +10 % per worker, sys.path not
longer at the end, every alias move seen in the answers, no worker replaced during the run.

A running stack (--predict-url, which must be a loopback address, and --tracking-uri): the alias
moves between --versions A,B (default: the current champion and the newest other version) and
goes back to the original champion at the end. Credentials come from the environment:
PREDICT_API_TOKEN (bearer for /predict and /metrics), MLFLOW_TRACKING_USERNAME/PASSWORD (an
account that may move the alias: `make bench-soak` exports the native stack's trainer from
credentials.env). RSS is read from /proc when the service runs on this machine: its gunicorn
master is found by the listening port, or given with --master-pid (for a container:
`docker inspect --format '{{.State.Pid}}' <predict container>`); otherwise from the service's
per-worker gauge predict_worker_resident_memory_bytes ('n/a' without it).
Every process it starts is stopped before it exits.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import ipaddress
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # run as a script: make bench.* and tests.* importable

import requests  # noqa: E402

from bench.serving import RIDE, our_service  # noqa: E402
from bench.soak_load import FixedRateLoad, Move, follow_moves  # noqa: E402
from bench.soak_procs import Sampler, master_listening_on  # noqa: E402
from bench.soak_report import Bar, print_report  # noqa: E402
from nyctaxi import names  # noqa: E402
from tests.servers import mlflow_server, taxi_data_dir  # noqa: E402

WARMUP_SECONDS = 5  # of load before the clock starts: every worker has answered at least once
OWN_CODE_MARK = "\n# A copy shipped by bench/soak.py: this version loads its own nyctaxi code.\n"


@dataclass(frozen=True)
class Target:
    predict_url: str
    tracking_uri: str
    versions: tuple[str, str]  # the alias starts on the first
    master_pid: int | None
    headers: dict[str, str]
    restore: str | None  # the champion to put back at the end (a running stack's)


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@contextlib.contextmanager
def quiet_mlflow() -> Iterator[None]:
    """MLflow's chatter while logging models (warnings, run links) only when something fails."""
    logger = logging.getLogger("mlflow")
    level, chatter = logger.level, io.StringIO()
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
            yield
    except BaseException:
        sys.stderr.write(chatter.getvalue())
        raise
    finally:
        logger.setLevel(level)


def register_versions(tracking_uri: str, model: str, alias: str, tmp: Path) -> tuple[str, str]:
    """v1 on 2023-01 (the installed code, alias on it), v2 on 2023-02 with its own code copy."""
    from bench.serving_model import clean_month, register_version, train_booster
    from nyctaxi.modelcode import installed_package_dir

    code = tmp / "v2-code" / "nyctaxi"
    shutil.copytree(
        installed_package_dir(), code, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    init = code / "__init__.py"
    init.write_text(init.read_text() + OWN_CODE_MARK)
    versions = []
    for month, package_dir in (("2023-01", None), ("2023-02", code)):
        trips = clean_month(taxi_data_dir(), month)
        versions.append(
            register_version(
                tracking_uri,
                model,
                train_booster(trips),
                trips,
                alias=alias if package_dir is None else None,
                experiment="soak",
                package_dir=package_dir,
            )
        )
    return versions[0], versions[1]


def existing_versions(args: argparse.Namespace) -> tuple[tuple[str, str], str]:
    """The two versions a running stack's alias moves between, and its champion now."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(args.tracking_uri)
    champion = str(client.get_model_version_by_alias(args.model_name, args.alias).version)
    if args.versions:
        first, second = args.versions.split(",")
        return (first.strip(), second.strip()), champion
    others = [
        int(v.version)
        for v in client.search_model_versions(f"name='{args.model_name}'")
        if str(v.version) != champion
    ]
    if not others:
        raise SystemExit(f"{args.model_name} has only version {champion}: register another one")
    return (champion, str(max(others))), champion


def move_alias(tracking_uri: str, model: str, alias: str, version: str) -> None:
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri).set_registered_model_alias(model, alias, version)


@contextlib.contextmanager
def soak_target(args: argparse.Namespace, tmp: Path) -> Iterator[Target]:
    """The stack under load: the running one given on the command line, or a throwaway one."""
    with contextlib.ExitStack() as stack:
        tracking_uri, restore = args.tracking_uri, None
        if tracking_uri is None:
            tracking_uri = stack.enter_context(mlflow_server(tmp / "mlflow"))
            print(f"registering two versions of {args.model_name} ...", flush=True)
            with quiet_mlflow():
                versions = register_versions(tracking_uri, args.model_name, args.alias, tmp)
        else:
            versions, restore = existing_versions(args)
            move_alias(tracking_uri, args.model_name, args.alias, versions[0])
            stack.callback(move_alias, tracking_uri, args.model_name, args.alias, restore)
        if args.predict_url is None:
            env = {
                "MLFLOW_TRACKING_URI": tracking_uri,
                "MODEL_NAME": args.model_name,
                "MODEL_ALIAS": args.alias,
                "NO_PROXY": "127.0.0.1,localhost",
            }
            print("starting the prediction service ...", flush=True)
            server = stack.enter_context(our_service(tmp, env, "sync"))
            yield Target(server.url, tracking_uri, versions, server.pgid, {}, restore)
            return
        url = args.predict_url.rstrip("/")
        master = args.master_pid or master_listening_on(urlsplit(url).port or 80)
        token = os.environ.get("PREDICT_API_TOKEN", "").strip()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        yield Target(url, tracking_uri, versions, master, headers, restore)


def wait_serving(target: Target, version: str, timeout: float = 120) -> None:
    """Until /predict answers with `version` (a running stack follows the alias within ~5 s)."""
    deadline = time.monotonic() + timeout
    while True:
        response = requests.post(
            target.predict_url + "/predict", json=RIDE, headers=target.headers, timeout=10
        )
        if response.ok and response.headers.get("X-Model-Version") == version:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"/predict answers {response.status_code}, not version {version}")
        time.sleep(1)


def soak(args: argparse.Namespace, target: Target) -> list[Bar]:
    total = args.minutes * 60.0
    body = json.dumps(RIDE).encode()
    load = {"rate": args.rate, "threads": args.threads}
    url = target.predict_url + "/predict"
    wait_serving(target, target.versions[0])
    warmup = FixedRateLoad(url, body, target.headers, **load)
    for thread in warmup.start(time.monotonic(), WARMUP_SECONDS):
        thread.join()
    main = FixedRateLoad(url, body, target.headers, **load)
    origin = time.monotonic()
    threads = main.start(origin, total)
    sampler = Sampler(target.master_pid, target.predict_url + "/metrics", target.headers)
    sampling = sampler.run(lambda: time.monotonic() - origin)
    moves: list[Move] = []
    at = args.swap_every
    while at < total:
        time.sleep(max(0.0, origin + at - time.monotonic()))  # the schedule, not a sync
        version = target.versions[(len(moves) + 1) % 2]  # the other one: 1, 0, 1, ...
        move_alias(target.tracking_uri, args.model_name, args.alias, version)
        moves.append(Move(time.monotonic() - origin, version))
        print(f"{moves[-1].at:6.1f} s  {args.alias} -> version {version}", flush=True)
        at += args.swap_every
    for thread in threads:
        thread.join()
    sampler.stop(sampling)
    sampler.sample(time.monotonic() - origin)  # once more after the load: the end state
    outcomes = main.outcomes()
    seen = follow_moves(outcomes, moves, total)
    return print_report(
        args, outcomes, seen, sampler.samples, late=main.late, rss_source=sampler.rss_source
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=int, default=10, help="of measured load (>= 2)")
    parser.add_argument("--swap-every", type=float, default=120.0, help="seconds between moves")
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second")
    parser.add_argument("--threads", type=int, default=4, help="client threads (connections)")
    parser.add_argument("--predict-url", help="soak this running service (loopback only)")
    parser.add_argument("--tracking-uri", help="its MLflow registry (needed with --predict-url)")
    parser.add_argument("--versions", help="A,B: the versions to move the alias between")
    parser.add_argument("--master-pid", type=int, help="the service's gunicorn master, for RSS")
    parser.add_argument("--model-name", default=names.MODEL_NAME)
    parser.add_argument("--alias", default=names.CHAMPION_ALIAS)
    args = parser.parse_args(argv)
    if args.minutes < 2:
        parser.error("--minutes must be >= 2: minute 1 is compared with the last minute")
    if args.predict_url and not args.tracking_uri:
        parser.error("--predict-url needs --tracking-uri: the soak moves the alias there")
    if args.predict_url and not is_loopback(args.predict_url):
        parser.error("--predict-url must be a loopback address: load stays on this machine")
    return args


def main() -> int:
    args = parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp_name,
        soak_target(args, Path(tmp_name)) as target,
    ):
        print(
            f"soaking {target.predict_url}/predict for {args.minutes} min at {args.rate:g}"
            f" req/s; {args.alias} moves every {args.swap_every:g} s between versions "
            f"{' and '.join(target.versions)}",
            flush=True,
        )
        bars = soak(args, target)
    return 0 if all(bar.passed for bar in bars) else 1


if __name__ == "__main__":
    sys.exit(main())
