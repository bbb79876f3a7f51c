"""The OpenAPI 3.0 description of the service, served at /openapi.json."""

from __future__ import annotations

from typing import Any

from services.predict.auth import PROTECTED_ROUTES, REALM, SECURITY_SCHEME
from services.predict.settings import PredictSettings
from services.predict.validation import MAX_YEAR, MIN_YEAR

_ORIGIN = {
    "type": "string",
    "enum": ["registry", "cache"],
    "description": "registry: the alias points at this version (checked); cache: the version "
    "last served here, loaded from the local cache while the registry did not answer",
}
_REGISTRY_STATE = {"type": "string", "enum": ["unknown", "reachable", "unreachable", "error"]}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


def _schemas(settings: PredictSettings) -> dict[str, Any]:
    zone = {"type": "integer", "minimum": 1, "maximum": 265, "description": "TLC taxi zone ID"}
    return {
        "Ride": {
            "type": "object",
            "required": ["PULocationID", "DOLocationID", "trip_distance"],
            "additionalProperties": True,
            "description": "One ride. Fields other than these four are ignored.",
            "properties": {
                "PULocationID": zone,
                "DOLocationID": zone,
                "trip_distance": {
                    "type": "number",
                    "minimum": 0,
                    "maximum": settings.max_trip_distance,
                    "description": "Miles. NaN and Infinity are not JSON and are rejected.",
                },
                "lpep_pickup_datetime": {
                    "type": "string",
                    "format": "date-time",
                    "nullable": True,
                    "example": "2023-03-01T08:15:00",
                    "description": (
                        "ISO 8601. Naive times are NYC wall-clock time (as in TLC data); times "
                        "with an offset are converted to NYC time. Absent or null: the current "
                        f"time in America/New_York. Years {MIN_YEAR}..{MAX_YEAR}."
                    ),
                },
            },
        },
        "RideBatch": {
            "type": "array",
            "items": _ref("Ride"),
            "minItems": 1,
            "maxItems": settings.max_batch_rides,
        },
        "ModelIdentity": {
            "type": "object",
            "required": ["name", "version", "alias"],
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "alias": {"type": "string"},
            },
        },
        "Prediction": {
            "type": "object",
            "required": ["duration", "model"],
            "properties": {
                "duration": {"type": "number", "description": "Predicted trip duration, minutes"},
                "model": _ref("ModelIdentity"),
            },
        },
        "BatchPrediction": {
            "type": "object",
            "required": ["predictions", "model"],
            "properties": {
                "predictions": {
                    "type": "array",
                    "items": {"type": "number"},
                    "description": "Minutes, in the order of the rides sent",
                },
                "model": _ref("ModelIdentity"),
            },
        },
        "ModelInfo": {
            "type": "object",
            "required": ["name", "version", "alias", "run_id", "loaded_at", "metrics"],
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "alias": {"type": "string"},
                "run_id": {"type": "string", "nullable": True},
                "loaded_at": {"type": "string", "format": "date-time"},
                "metrics": {
                    "type": "object",
                    "additionalProperties": {"type": "number"},
                    "description": "Metrics of the training run (val_rmse, val_mae, ...)",
                },
                "source": {"type": "string", "nullable": True},
                "code_version": {
                    "type": "string",
                    "nullable": True,
                    "description": "Digest of the nyctaxi code the version was logged with and "
                    "runs here (model-version tag code_version)",
                },
                "origin": _ORIGIN,
                "checksum": {
                    "type": "string",
                    "nullable": True,
                    "description": "sha256 over the version's files in the local model cache",
                },
                "registry": {
                    "type": "object",
                    "properties": {
                        "status": _REGISTRY_STATE,
                        "checked_at": {"type": "string", "nullable": True},
                        "answered_at": {"type": "string", "nullable": True},
                    },
                },
                "refused": {
                    "type": "array",
                    "description": "The version under the alias, when it failed to load or to "
                    "warm up: retried with growing intervals",
                    "items": {
                        "type": "object",
                        "properties": {
                            "version": {"type": "string"},
                            "run_id": {"type": "string", "nullable": True},
                            "attempts": {"type": "integer"},
                            "reason": {"type": "string"},
                            "retry_in_seconds": {"type": "number"},
                        },
                    },
                },
                "worker_pid": {"type": "integer"},
                "last_problem": {"type": "string", "nullable": True},
            },
        },
        "Readiness": {
            "type": "object",
            "required": ["status", "model", "origin", "registry"],
            "properties": {
                "status": {"type": "string", "enum": ["ready"]},
                "model": _ref("ModelIdentity"),
                "origin": _ORIGIN,
                "registry": _REGISTRY_STATE,
                "degraded": {
                    "type": "boolean",
                    "description": "Present (true) when the service does not follow the alias "
                    "right now; `detail` says why",
                },
                "detail": {"type": "string"},
            },
        },
        "Error": {
            "type": "object",
            "required": ["error", "details"],
            "properties": {
                "error": {"type": "string"},
                "details": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["field", "problem"],
                        "properties": {
                            "field": {
                                "type": "string",
                                "description": "e.g. trip_distance, [3].PULocationID, body, model",
                            },
                            "problem": {"type": "string"},
                        },
                    },
                },
            },
        },
    }


def _predict_operation(settings: PredictSettings) -> dict[str, Any]:
    return {
        "summary": "Predict trip durations (minutes) for one ride or a list of rides",
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"oneOf": [_ref("Ride"), _ref("RideBatch")]},
                }
            },
        },
        "responses": {
            "200": _json(
                {"oneOf": [_ref("Prediction"), _ref("BatchPrediction")]},
                "A ride gives `duration`; a list gives `predictions` in input order",
            ),
            "400": _error("Empty body, not JSON (NaN/Infinity included), or not a ride/list"),
            "413": _error(
                f"Body over {settings.max_body_bytes} bytes or over "
                f"{settings.max_batch_rides} rides"
            ),
            "415": _error("Content-Type is not application/json"),
            "422": _error("Rides with missing or invalid fields; `details` names each one"),
            "503": _error("No model loaded yet; `details` says what is missing"),
        },
    }


def _security_scheme() -> dict[str, Any]:
    return {
        "type": "http",
        "scheme": "bearer",
        "description": (
            f"The token the service runs with (PREDICT_API_TOKEN; realm {REALM}). Needed only "
            "by the operations that list this scheme; none do when the service runs without one."
        ),
    }


def _require_token(paths: dict[str, Any]) -> None:
    """Mark the protected operations: bearer security and their 401 answer."""
    unauthorized = _error(
        "Missing or wrong bearer token (header WWW-Authenticate: Bearer, with "
        'error="invalid_token" when a wrong token was sent)'
    )
    for route in PROTECTED_ROUTES:
        for operation in paths[route].values():
            operation["security"] = [{SECURITY_SCHEME: []}]
            operation["responses"]["401"] = unauthorized


def openapi_spec(settings: PredictSettings) -> dict[str, Any]:
    spec = _base_spec(settings)
    if settings.api_token is not None:
        _require_token(spec["paths"])
    return spec


def _base_spec(settings: PredictSettings) -> dict[str, Any]:
    not_found = _error("No such route")
    wrong_method = _error("Method not allowed on this route")
    no_model = _error("No model loaded yet; `details` says what is missing")
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "NYC green-taxi trip duration",
            "version": "1.0.0",
            "description": (
                f"Serves models:/{settings.model_name}@{settings.model_alias}; every prediction "
                "names the model version that made it (also in the X-Model-Version header). "
                "Every error is JSON shaped like `Error`, including 404 and 405."
            ),
        },
        "paths": {
            "/predict": {"post": _predict_operation(settings)},
            "/health": {
                "get": {
                    "summary": "Liveness: the process answers",
                    "responses": {"200": {"description": "Alive"}},
                }
            },
            "/ready": {
                "get": {
                    "summary": "Readiness: a model is loaded (and whether it follows the alias)",
                    "responses": {
                        "200": _json(_ref("Readiness"), "Ready (maybe degraded)"),
                        "503": no_model,
                    },
                }
            },
            "/model": {
                "get": {
                    "summary": "The served model: version, run, load time, training metrics",
                    "responses": {"200": _json(_ref("ModelInfo"), "Model"), "503": no_model},
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics of all workers",
                    "responses": {
                        "200": {
                            "description": "Prometheus text format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {"200": _json({"type": "object"}, "OpenAPI 3.0 document")},
                }
            },
        },
        "components": {
            "securitySchemes": {SECURITY_SCHEME: _security_scheme()},
            "schemas": _schemas(settings),
            "responses": {"NotFound": not_found, "MethodNotAllowed": wrong_method},
        },
    }
