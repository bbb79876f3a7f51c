"""Flask app factory of the prediction service.

Run it under gunicorn (see gunicorn_conf.py):
    gunicorn --config services/predict/gunicorn_conf.py "services.predict.app:create_app()"

Nothing happens at import time: `create_app()` reads the settings and starts the model poller of
the process it runs in (each gunicorn worker calls it after the fork).
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
from flask import Flask, Response, current_app, g, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from services.predict.auth import PROTECTED_ROUTES, BearerCheck
from services.predict.backoff import Refusals
from services.predict.events import refusal_notifier
from services.predict.holder import LoadedModel, ModelHolder, RegistryStatus, SwapListener
from services.predict.metrics import ServiceMetrics
from services.predict.mlflow_source import MlflowModelSource
from services.predict.model_cache import ModelCache
from services.predict.openapi import openapi_spec
from services.predict.prediction_log import REQUEST_ID_HEADER, PredictionLog, open_log, request_id
from services.predict.redact import install_log_redaction
from services.predict.settings import PredictSettings
from services.predict.validation import Problem, RequestError, parse_json_body, parse_rides

logger = logging.getLogger(__name__)
UNMATCHED_ROUTE = "<unmatched>"


class Holder(Protocol):
    """What the app needs of ModelHolder (tests may pass their own)."""

    @property
    def current(self) -> LoadedModel | None: ...

    @property
    def public_problem(self) -> str | None: ...

    @property
    def registry(self) -> RegistryStatus: ...

    def refused(self) -> list[dict[str, Any]]: ...

    def add_listener(self, listener: SwapListener) -> None: ...

    def add_poll_listener(self, listener: Callable[[], None]) -> None: ...

    def ensure_started(self) -> None: ...

    def wait_first_attempt(self, timeout: float) -> bool: ...


def _is_json(mimetype: str) -> bool:
    return mimetype == "application/json" or (
        mimetype.startswith("application/") and mimetype.endswith("+json")
    )


def _not_ready(holder: Holder) -> RequestError:
    # Never holder.problem: it names the registry (maybe with credentials) and quotes exceptions.
    problem = holder.public_problem or "no model loaded yet"
    return RequestError(503, "model not ready", [Problem("model", problem)])


def _json_response(body: dict[str, Any], status: int = 200) -> Response:
    response = current_app.json.response(body)  # type: ignore[attr-defined]
    response.status_code = status
    return response


def _error_response(status: int, error: str, field: str, problem: str) -> Response:
    return _json_response(RequestError(status, error, [Problem(field, problem)]).to_json(), status)


def _round(values: np.ndarray) -> list[float]:
    return np.round(np.asarray(values, dtype=np.float64), 3).tolist()


def create_app(settings: PredictSettings | None = None, holder: Holder | None = None) -> Flask:
    """The WSGI app. `holder` replaces the MLflow-backed ModelHolder (tests pass a ModelHolder
    over a fake source)."""
    install_log_redaction()
    settings = settings or PredictSettings()
    metrics = ServiceMetrics()
    if holder is None:
        holder = build_holder(settings)
    holder.add_listener(metrics.model_swapped)

    def sample() -> None:
        metrics.sample_process()
        metrics.serving_state(holder.current, holder.registry.state)

    holder.add_poll_listener(sample)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.json.compact = True  # type: ignore[attr-defined]
    prediction_log = open_log(settings, metrics)
    _install_hooks(app, holder, metrics)
    _install_auth(app, settings)
    _install_error_handlers(app, settings)
    _install_predict(app, settings, holder, metrics, prediction_log)
    _install_info_routes(app, settings, holder, metrics, sample, prediction_log)
    holder.ensure_started()
    # A worker takes requests once it had its chance to load a model (from the registry or
    # the cache): a worker respawned under load then answers 200s, not 503s.
    holder.wait_first_attempt(settings.startup_wait_seconds)
    return app


def open_cache(settings: PredictSettings) -> ModelCache | None:
    """The local model cache, or None (logged) when its folder cannot be written."""
    cache = ModelCache(settings.cache_dir(), settings.model_name, keep=settings.model_cache_keep)
    try:
        cache.probe()
    except OSError as error:
        logger.warning(
            "model cache disabled (%s): a restart during a registry outage will "
            "serve nothing until the registry answers",
            error,
        )
        return None
    return cache


def build_holder(settings: PredictSettings) -> ModelHolder:
    """The MLflow-backed holder with its cache, backoff and refusal events."""
    return ModelHolder(
        MlflowModelSource(settings),
        reload_interval=settings.reload_interval_seconds,
        retry_interval=settings.retry_interval_seconds,
        cache=open_cache(settings),
        refusals=Refusals(
            first=settings.refused_retry_seconds, cap=settings.refused_retry_max_seconds
        ),
        on_refused=refusal_notifier(settings),
    )


def _install_hooks(app: Flask, holder: Holder, metrics: ServiceMetrics) -> None:
    @app.before_request
    def start_timer() -> None:
        g.started = time.perf_counter()
        holder.ensure_started()  # no-op unless this process was forked after create_app

    @app.after_request
    def record(response: Response) -> Response:
        loaded = holder.current
        if loaded is not None and "X-Model-Version" not in response.headers:
            response.headers["X-Model-Name"] = loaded.name
            response.headers["X-Model-Version"] = loaded.version
        if "request_id" in g:  # /predict's, on its answers and its errors alike
            response.headers[REQUEST_ID_HEADER] = g.request_id
        rule = request.url_rule.rule if request.url_rule is not None else UNMATCHED_ROUTE
        started = g.get("started", time.perf_counter())
        metrics.observe(rule, request.method, response.status_code, time.perf_counter() - started)
        return response


def _install_auth(app: Flask, settings: PredictSettings) -> None:
    """With PREDICT_API_TOKEN set, the protected routes answer 401 without the bearer token."""
    if settings.api_token is None:
        return
    bearer = BearerCheck(settings.api_token.get_secret_value())

    @app.before_request
    def require_token() -> Response | None:
        rule = request.url_rule
        # Unmatched paths and methods go on to their 404/405; OPTIONS (CORS preflights never
        # carry credentials) only lists the methods.
        if rule is None or rule.rule not in PROTECTED_ROUTES or request.method == "OPTIONS":
            return None
        failure = bearer.check(request.headers.get("Authorization"))
        if failure is None:
            return None
        response = _error_response(401, "unauthorized", "Authorization", failure.problem)
        response.headers["WWW-Authenticate"] = failure.challenge()
        return response


def _install_error_handlers(app: Flask, settings: PredictSettings) -> None:
    """Every error is JSON shaped like validation.RequestError: never an HTML page."""

    @app.errorhandler(RequestError)
    def request_error(error: RequestError) -> Response:
        return _json_response(error.to_json(), error.status)

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(error: RequestEntityTooLarge) -> Response:
        problem = f"the body is larger than {settings.max_body_bytes} bytes"
        return _error_response(413, "body too large", "body", problem)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        status = error.code or 500
        field, problem = "request", error.description or error.name
        if status == 404:
            field, problem = "path", f"no route {request.path}; see /openapi.json"
        elif status == 405:
            allowed = ", ".join(sorted(error.valid_methods or []))  # type: ignore[attr-defined]
            field, problem = "method", f"{request.method} is not allowed here; use {allowed}"
        response = _error_response(status, error.name.lower(), field, problem)
        allow = dict(error.get_headers()).get("Allow")
        if allow:
            response.headers["Allow"] = allow
        return response

    @app.errorhandler(Exception)
    def server_error(error: Exception) -> Response:
        # The body names no exception (its text may hold hosts or paths); the id finds the log.
        error_id = uuid.uuid4().hex[:12]
        logger.exception("unhandled error %s on %s %s", error_id, request.method, request.path)
        problem = f"unexpected server error {error_id}; see the service log"
        return _error_response(500, "internal error", "server", problem)


def _install_predict(
    app: Flask,
    settings: PredictSettings,
    holder: Holder,
    metrics: ServiceMetrics,
    prediction_log: PredictionLog | None,
) -> None:
    @app.post("/predict")
    def predict() -> Response:
        g.request_id = request_id(request.headers.get(REQUEST_ID_HEADER))
        if not _is_json(request.mimetype):
            got = request.mimetype or "none"
            detail = Problem("Content-Type", f"must be application/json, got {got}")
            raise RequestError(415, "unsupported media type", [detail])
        payload = parse_json_body(request.get_data(cache=False))
        rides = parse_rides(
            payload, max_rides=settings.max_batch_rides, max_distance=settings.max_trip_distance
        )
        loaded = holder.current  # one read: this request uses this version throughout
        if loaded is None:
            raise _not_ready(holder)
        minutes = loaded.predictor.predict_rides(
            rides.pu_location_id, rides.do_location_id, rides.trip_distance, rides.pickup
        )
        metrics.predictions.labels(loaded.version).inc(len(rides))
        if prediction_log is not None:  # queued; a thread writes it (prediction_log.py)
            prediction_log.record(g.request_id, rides, minutes, loaded)
        if rides.single:
            body: dict[str, Any] = {"duration": _round(minutes)[0], "model": loaded.identity()}
        else:
            body = {"predictions": _round(minutes), "model": loaded.identity()}
        response = _json_response(body)
        response.headers["X-Model-Name"] = loaded.name
        response.headers["X-Model-Version"] = loaded.version
        return response


def _install_info_routes(
    app: Flask,
    settings: PredictSettings,
    holder: Holder,
    metrics: ServiceMetrics,
    sample: Callable[[], None],
    prediction_log: PredictionLog | None,
) -> None:
    spec = openapi_spec(settings)

    @app.get("/health")
    def health() -> Response:
        return _json_response({"status": "ok"})

    @app.get("/ready")
    def ready() -> Response:
        loaded = holder.current
        if loaded is None:
            raise _not_ready(holder)
        return _json_response(readiness(loaded, holder))

    @app.get("/model")
    def model() -> Response:
        loaded = holder.current
        if loaded is None:
            raise _not_ready(holder)
        body = {
            **loaded.describe(),
            "registry": holder.registry.describe(),
            "refused": holder.refused(),
            "worker_pid": os.getpid(),
            "last_problem": holder.public_problem,
            # this worker's log: folder, rides queued, written, dropped (None: no log)
            "prediction_log": prediction_log.state() if prediction_log is not None else None,
        }
        return _json_response(body)

    @app.get("/metrics")
    def prometheus() -> Response:
        sample()  # this worker's gauges as of now (the others' as of their last poll)
        data, content_type = metrics.render()
        return Response(data, content_type=content_type)

    @app.get("/openapi.json")
    def openapi() -> Response:
        return _json_response(spec)


def readiness(loaded: LoadedModel, holder: Holder) -> dict[str, Any]:
    """The /ready body: ready (a model answers), and whether it follows the alias right now.
    `degraded` and `detail` appear only when it does not: a cached version served while the
    registry does not answer, a registry that stopped answering, a refused version."""
    registry = holder.registry.state
    body: dict[str, Any] = {
        "status": "ready",
        "model": loaded.identity(),
        "origin": loaded.origin,
        "registry": registry,
    }
    ref = f"version {loaded.version} of model '{loaded.name}' under alias '{loaded.alias}'"
    refused = holder.refused()
    if loaded.origin == "cache":
        detail = f"serving the cached {ref}: the registry is {registry}; the alias is followed "
        detail += "again when it answers"
    elif registry in ("unreachable", "error"):
        detail = f"serving {ref}; the registry is {registry}: a move of the alias waits for it"
    elif refused:
        detail = f"serving {ref}; version {refused[0]['version']} under the alias is refused "
        detail += f"({refused[0]['reason']}), next attempt in {refused[0]['retry_in_seconds']}s"
    else:
        return body
    return {**body, "degraded": True, "detail": detail}
