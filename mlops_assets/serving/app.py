"""The scoring service: FastAPI app factory (settings, use cases and configuration are injected).

Endpoints (OpenAPI docs at /docs, schema at /openapi.json):
    GET  /v1/health                                      liveness
    GET  /v1/ready                                       503 until every use case has a verified champion
                                                         and published scores
    GET  /v1/use-cases                                   served use cases, champion, publication, shadows
    GET  /v1/use-cases/{use_case}/customers/{customer_id} latest published score (scope lookup)
    POST /v1/use-cases/{use_case}/score                  score raw export records (scope score)
    GET  /metrics                                        Prometheus metrics
    /, /login, /models/..., /audit/...                   review pages for people (web.py; not in the API docs)
"""

# No `from __future__ import annotations`: FastAPI must see the dependency types of the endpoints,
# which are closures of create_app.
import gc
import glob
import json
import logging
import os
import time
import uuid
from contextlib import asynccontextmanager
from datetime import datetime
from decimal import Decimal
from typing import Annotated

import numpy as np
import pandas as pd
from fastapi import Depends, FastAPI, HTTPException, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from pydantic import BaseModel, Field

from mlops_assets.serving.config import ApiKey, ServingConfig
from mlops_assets.serving.features import FeatureSql, OnlineFeatures, RecordError, compile_feature_sql
from mlops_assets.serving.records import RequestLog
from mlops_assets.serving.scoring import NoChampionError, Scorer
from mlops_assets.serving.state import ServedUseCase, Watcher, frame_reasons
from mlops_assets.serving.web import install_review_pages
from mlops_assets.settings import Settings
from mlops_assets.use_cases import UseCase

access_logger = logging.getLogger("mlops.serving.access")

CUSTOMER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
RawValue = str | int | float | bool | None


# ---- request and response bodies (they make the OpenAPI docs) ----


class Reason(BaseModel):
    feature: str
    label: str | None
    value: str | None
    contribution: float = Field(description="SHAP contribution in log-odds (LightGBM pred_contrib).")


class LookupResponse(BaseModel):
    use_case: str
    customer_id: str
    score: float = Field(description="Purchase probability.")
    rank: int = Field(description="1 = most likely buyer of the publication.")
    decile: int = Field(description="1 = top 10%.")
    reasons: list[Reason] = Field(description="Top reasons; empty outside the explained top share.")
    model_version: str
    scored_at: datetime
    published_at: datetime


class ScoreRequest(BaseModel):
    records: list[dict[str, RawValue]] = Field(
        min_length=1,
        description="Customer records with the use case's raw export columns (as in the export file) and the id.",
    )


class ScoredRecord(BaseModel):
    customer_id: str
    probability: float
    reasons: list[Reason]
    model_version: str
    model_role: str = Field(description="champion, or canary when the challenger answered this customer.")


class ScoreResponse(BaseModel):
    use_case: str
    request_id: str
    results: list[ScoredRecord]


class Metrics:
    """The service's Prometheus metrics. With several worker processes (PROMETHEUS_MULTIPROC_DIR set by
    server.py) each worker writes its own values to files there and /metrics adds them up
    (prometheus-client's multiprocess mode): counters and histograms summed, and the versions each live
    worker serves (label pid), so a swap shows worker by worker."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        self.requests = Counter(
            "mlops_serving_requests", "Requests served", ["endpoint", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "mlops_serving_request_seconds",
            "Request latency",
            ["endpoint"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        self.errors = Counter(
            "mlops_serving_errors", "Requests answered 4xx/5xx", ["endpoint", "status"], registry=self.registry
        )
        self.model = Gauge(
            "mlops_serving_model_info",
            "Model versions served (1 = serving, 0 = served before)",
            ["use_case", "role", "model_version"],
            registry=self.registry,
            multiprocess_mode="liveall",  # with several workers: one series a live worker (label pid)
        )
        self._served_labels: set[tuple[str, str, str]] = set()
        self.swaps = Counter(
            "mlops_serving_swaps",
            "Snapshots swapped in (by each worker process)",
            ["use_case", "kind"],
            registry=self.registry,
        )
        self.shadow = Counter(
            "mlops_serving_shadow_scores",
            "Records scored in shadow",
            ["use_case", "model_version"],
            registry=self.registry,
        )

    def serving(self, served: ServedUseCase) -> None:
        """Versions served now at 1, those served before at 0: multiprocess mode cannot remove a label."""
        labels = set()
        if served.models is not None:
            labels.add((served.name, "champion", served.models.champion.version))
            labels.update((served.name, "shadow", shadow.version) for shadow in served.models.shadows)
        if served.scores is not None:
            labels.add((served.name, "published_scores", served.scores.model_version))
        for label in self._served_labels - labels:
            if label[0] == served.name:
                self.model.labels(*label).set(0)
        for label in labels:
            self.model.labels(*label).set(1)
        self._served_labels = {label for label in self._served_labels if label[0] != served.name} | labels

    def exposition(self) -> bytes:
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        _forget_dead_workers(self.multiprocess_dir)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.multiprocess_dir)
        return generate_latest(registry)


def _forget_dead_workers(directory: str) -> None:
    """Drop the gauges of worker processes that have died (uvicorn's supervisor replaces them but does
    not tell prometheus-client), so a version they served is not reported as served."""
    for path in glob.glob(os.path.join(directory, "gauge_live*_*.db")):
        pid = int(path.removesuffix(".db").rsplit("_", 1)[1])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, directory)


def _endpoint(path: str) -> str:
    if path.startswith("/v1/use-cases/"):
        if path.endswith("/score"):
            return "score"
        if "/customers/" in path:
            return "lookup"
    return {"/v1/health": "health", "/v1/ready": "ready", "/v1/use-cases": "use_cases", "/metrics": "metrics"}.get(
        path, "other"
    )


def _json_error(status: int, detail) -> Response:
    return Response(json.dumps({"detail": detail}), status_code=status, media_type="application/json")


class ServingMiddleware:
    """Pure ASGI (cheaper than BaseHTTPMiddleware): request id, body-size limit (413), metrics,
    structured access log, and the durable request record of every use-case request."""

    def __init__(self, app, service: "Service"):
        self.app = app
        self.service = service
        self.worker = os.getpid()  # which of the service's worker processes answered

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        path = scope["path"]
        endpoint = _endpoint(path)
        request_id = uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status_holder = {"status": 500}

        async def send_with_status(message):
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        app_receive = receive
        limit = self.service.config.max_body_bytes
        if scope["method"] in ("POST", "PUT", "PATCH"):
            headers = dict(scope["headers"])
            declared = headers.get(b"content-length")
            too_large = declared is not None and declared.isdigit() and int(declared) > limit
            body = b""
            if not too_large:
                # Read the body up to the limit (also when no length is declared, e.g. chunked).
                more = True
                while more:
                    message = await receive()
                    body += message.get("body", b"")
                    more = message.get("more_body", False)
                    if len(body) > limit:
                        too_large = True
                        break
            if too_large:
                await _json_error(413, f"request body larger than {limit} bytes")(scope, receive, send_with_status)
                self._finish(scope, state, endpoint, path, 413, started)
                return
            delivered = False

            async def app_receive():
                nonlocal delivered
                if not delivered:
                    delivered = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

        try:
            await self.app(scope, app_receive, send_with_status)
        finally:
            self._finish(scope, state, endpoint, path, status_holder["status"], started)

    def _finish(self, scope, state: dict, endpoint: str, path: str, status: int, started: float) -> None:
        elapsed = time.perf_counter() - started
        metrics = self.service.metrics
        metrics.requests.labels(endpoint, str(status)).inc()
        metrics.latency.labels(endpoint).observe(elapsed)
        if status >= 400:
            metrics.errors.labels(endpoint, str(status)).inc()
        caller = state.get("caller")
        client = scope.get("client")
        entry = {
            "request_id": state["request_id"],
            "method": scope["method"],
            "path": path,
            "endpoint": endpoint,
            "status": status,
            "latency_ms": round(elapsed * 1000, 3),
            "caller": caller,
            "client": f"{client[0]}:{client[1]}" if client else None,
            "worker": self.worker,
        }
        access_logger.info(json.dumps(entry))
        use_case = state.get("use_case")
        if use_case is None and endpoint in ("lookup", "score"):
            use_case = path.split("/")[3]
        if use_case in self.service.use_cases:
            self.service.request_log.record(use_case, {**entry, "use_case": use_case, **state.get("record", {})})


# A full collection is needed now and then: cyclic garbage among frozen objects is only found by one
# (measured: 9 objects left per dropped score snapshot and model).
FULL_COLLECTION_EVERY_SWAPS = 50


def keep_out_of_garbage_collection(full: bool = False) -> None:
    """Move everything alive now (modules, snapshots, models, prepared connections) out of the cyclic
    garbage collector's view (gc.freeze). Python's full collections otherwise traverse all of it: 210-370
    ms for the service's ~180,000 objects on this machine, a pause of every request in flight (after
    freezing: well under 1 ms). Objects still go away when their last reference does; `full` first
    collects everything once, for the cyclic garbage frozen objects can leave behind."""
    if full:
        gc.unfreeze()
        gc.collect()
    gc.freeze()


class Service:
    """Everything the endpoints share: configuration, snapshots, features, the request log, metrics."""

    def __init__(
        self,
        settings: Settings,
        use_cases: tuple[UseCase, ...],
        config: ServingConfig,
        feature_sql: dict[str, FeatureSql] | None = None,
    ):
        self.settings = settings
        self.config = config
        self.definitions = {u.name: u for u in use_cases}
        self.use_cases = {u.name: ServedUseCase(u.name) for u in use_cases}
        feature_sql = feature_sql or {u.name: compile_feature_sql(u) for u in use_cases}
        self.features = {u.name: OnlineFeatures(u, feature_sql[u.name]) for u in use_cases}
        self.readable_names = {u.name: u.readable_names() for u in use_cases}
        self.scorers = {
            u.name: Scorer(
                u.name,
                self.features[u.name],
                self.use_cases[u.name],
                canary_share=lambda name=u.name: config.canary_share(name),
                readable_names=self.readable_names[u.name],
                reasons_per_customer=u.scoring.reasons_per_customer,
            )
            for u in use_cases
        }
        self.metrics = Metrics()
        self.request_log = RequestLog(settings.home)
        self.watcher = Watcher(settings.home, settings.published_dir, self.use_cases, config.watch_interval_seconds)
        self.watcher.on_swap = self._swapped
        self.swaps = 0

    def _swapped(self, use_case: str, kind: str, version: str) -> None:
        self.metrics.swaps.labels(use_case, kind).inc()
        self.metrics.serving(self.use_cases[use_case])
        self.swaps += 1
        keep_out_of_garbage_collection(full=self.swaps % FULL_COLLECTION_EVERY_SWAPS == 0)

    def served(self, use_case: str) -> ServedUseCase:
        served = self.use_cases.get(use_case)
        if served is None:
            raise HTTPException(404, f"unknown use case {use_case!r}; served: {', '.join(self.use_cases)}")
        return served


def create_app(
    settings: Settings,
    use_cases: tuple[UseCase, ...],
    config: ServingConfig,
    feature_sql: dict[str, FeatureSql] | None = None,
) -> FastAPI:
    """The service for `use_cases`, reading `settings.published_dir`, logging under `settings.home`."""
    service = Service(settings, use_cases, config, feature_sql)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        for features in service.features.values():
            features.warm_up()  # prepare the feature statement now, not in the first requests
        service.watcher.start()
        keep_out_of_garbage_collection()
        yield
        # Graceful shutdown: uvicorn has stopped accepting and waited for requests in flight.
        service.watcher.stop()
        service.request_log.close()

    # FastAPIOffline: FastAPI whose /docs and /redoc pages load Swagger UI and ReDoc from files shipped in
    # the package (fastapi-offline), not from a CDN: FastAPI's own /docs stayed blank on a machine
    # without internet access, as a bank's servers often are.
    app = FastAPIOffline(
        title="Bank marketing scoring service",
        version="1",
        description="Propensity scores for advisors and applications: published scores and real-time scoring.",
        lifespan=lifespan,
        # The service reports through Prometheus and its own logs; FastAPI's OpenTelemetry bridge would
        # otherwise look up OpenTelemetry's providers on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.service = service
    app.openapi = lambda: _openapi_with_key_schemes(app)

    # Endpoints and dependencies that only read memory are `async` (no hop to the thread pool); scoring,
    # which runs DuckDB and LightGBM, stays a plain function and runs in uvicorn's worker threads.
    def scope(required: str | None):
        """The caller's key, checked: 401 without a valid key, 403 without the `required` scope.

        One dependency reading the headers itself, not FastAPI's APIKeyHeader and HTTPBearer under a
        caller and a scope dependency: solving those four was 40% of a lookup's CPU (cProfile, in
        process), about 0.15 ms a request. The two schemes still show in the OpenAPI docs (KEY_SCHEMES)."""

        async def check(request: Request) -> ApiKey:
            key = request.headers.get("x-api-key") or _bearer_token(request.headers.get("authorization"))
            if not key:
                raise HTTPException(
                    401,
                    "missing API key (X-API-Key header or Authorization: Bearer)",
                    headers={"WWW-Authenticate": "Bearer"},
                )
            found = service.config.caller_for(key)
            if found is None:
                raise HTTPException(401, "invalid API key", headers={"WWW-Authenticate": "Bearer"})
            request.state.caller = found.name
            if required is not None and required not in found.scopes:
                raise HTTPException(403, f"API key {found.name!r} lacks the scope {required!r}")
            return found

        return check

    caller = scope(None)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError):
        problems = []
        for item in error.errors():
            location = [part for part in item["loc"] if part not in ("body", "path", "query")]
            field = ""
            for part in location:
                field += f"[{part}]" if isinstance(part, int) else (f".{part}" if field else str(part))
            problems.append({"field": field or "body", "rule": item["msg"]})
        return JSONResponse({"detail": problems}, status_code=422)

    @app.get("/v1/health", tags=["operations"])
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/v1/ready", tags=["operations"])
    async def ready() -> JSONResponse:
        states = {
            name: {
                "champion": served.models.champion.version if served.models else None,
                "published_scores": served.scores.model_version if served.scores else None,
                "ready": served.ready,
            }
            for name, served in service.use_cases.items()
        }
        is_ready = all(s["ready"] for s in states.values())
        return JSONResponse({"ready": is_ready, "use_cases": states}, status_code=200 if is_ready else 503)

    @app.get("/metrics", tags=["operations"], include_in_schema=False)
    def metrics() -> Response:
        return Response(service.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/use-cases", tags=["scores"], openapi_extra=KEY_REQUIRED)
    async def list_use_cases(key: Annotated[ApiKey, Depends(caller)]) -> list[dict]:
        listing = []
        for name, served in service.use_cases.items():
            models, scores = served.models, served.scores
            listing.append(
                {
                    "use_case": name,
                    "title": service.definitions[name].title,
                    "champion_version": models.champion.version if models else None,
                    "models_exported_at": models.exported_at if models else None,
                    "shadow_versions": [m.version for m in models.shadows] if models else [],
                    "canary_share": service.config.canary_share(name),
                    "published_model_version": scores.model_version if scores else None,
                    "published_at": scores.published_at if scores else None,
                    "published_customers": scores.customers if scores else 0,
                    "refused_models": served.refused,
                    "ready": served.ready,
                }
            )
        return listing

    @app.get(
        "/v1/use-cases/{use_case}/customers/{customer_id}",
        tags=["scores"],
        response_model=LookupResponse,
        openapi_extra=KEY_REQUIRED,
    )
    async def lookup(
        request: Request,
        use_case: str,
        customer_id: Annotated[str, Path(pattern=CUSTOMER_ID_PATTERN, description="The customer's id")],
        key: Annotated[ApiKey, Depends(scope("lookup"))],
    ) -> LookupResponse:
        served = service.served(use_case)
        request.state.use_case = use_case
        scores = served.scores  # one snapshot for the whole answer
        if scores is None:
            raise HTTPException(503, f"{use_case}: no published scores yet")
        row = scores.row(customer_id)
        request.state.record = {"customer_id": customer_id, "model_version": scores.model_version}
        if row is None:
            raise HTTPException(404, f"{use_case}: no published score for customer {customer_id!r}")
        k = service.definitions[use_case].scoring.reasons_per_customer
        request.state.record["outputs"] = {"score": float(row["score"]), "rank": int(row["rank"])}
        return LookupResponse(
            use_case=use_case,
            customer_id=customer_id,
            score=float(row["score"]),
            rank=int(row["rank"]),
            decile=int(row["decile"]),
            reasons=frame_reasons(row, k),
            model_version=row["model_version"],
            scored_at=row["scored_at"],
            published_at=scores.published_at,
        )

    @app.post(
        "/v1/use-cases/{use_case}/score", tags=["scores"], response_model=ScoreResponse, openapi_extra=KEY_REQUIRED
    )
    def score(
        request: Request,
        use_case: str,
        body: ScoreRequest,
        key: Annotated[ApiKey, Depends(scope("score"))],
    ) -> ScoreResponse:
        served = service.served(use_case)
        request.state.use_case = use_case
        if len(body.records) > service.config.max_records:
            raise HTTPException(
                413, f"{len(body.records)} records in one request; at most {service.config.max_records}"
            )
        models = served.models  # recorded with a refused request; a scored one records the batch's models
        request.state.record = {"inputs": body.records, "model_version": models.champion.version if models else None}
        try:
            scored = service.scorers[use_case].score(body.records)
        except NoChampionError as error:
            raise HTTPException(503, str(error)) from error
        except RecordError as error:
            raise RequestValidationError(
                [
                    {"loc": ("body", "records", i, field), "msg": rule, "type": "value_error"}
                    for i, field, rule in error.problems
                ]
            ) from error
        models, challenger = scored.models, scored.models.challenger
        results = [
            ScoredRecord(
                customer_id=customer_id,
                probability=float(scored.answered[i]),
                reasons=scored.reasons[i],
                model_version=challenger.version if scored.canary[i] else models.champion.version,
                model_role="canary" if scored.canary[i] else "champion",
            )
            for i, customer_id in enumerate(scored.customer_ids)
        ]
        request.state.record.update(
            {
                "model_version": models.champion.version,
                "records": [
                    {
                        "customer_id": customer_id,
                        "features": {
                            name: _plain(value)
                            for name, value in zip(scored.input_names, scored.inputs[i], strict=True)
                        },
                        "answered_by": results[i].model_version,
                        "probability": results[i].probability,
                        "champion": {
                            "model_version": models.champion.version,
                            "probability": float(scored.champion[i]),
                        },
                        "shadows": [
                            {"model_version": v, "probability": float(s[i])} for v, s in scored.shadows.items()
                        ],
                    }
                    for i, customer_id in enumerate(scored.customer_ids)
                ],
            }
        )
        for version in scored.shadows:
            service.metrics.shadow.labels(use_case, version).inc(len(scored.customer_ids))
        return ScoreResponse(use_case=use_case, request_id=request.state.request_id, results=results)

    # The review pages at / after the API's routes (a lookup is matched without trying the pages' routes
    # first); their session cookie middleware inside the serving middleware.
    install_review_pages(app, service)
    app.add_middleware(ServingMiddleware, service=service)
    return app


# The API's two ways to send a key, as OpenAPI security schemes (the docs' "Authorize" button).
KEY_SCHEMES = {
    "APIKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "API key"},
    "HTTPBearer": {"type": "http", "scheme": "bearer", "description": "API key as a bearer token"},
}
KEY_REQUIRED = {"security": [{name: []} for name in KEY_SCHEMES]}


def _openapi_with_key_schemes(app: FastAPI) -> dict:
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schema.setdefault("components", {})["securitySchemes"] = KEY_SCHEMES
        app.openapi_schema = schema
    return app.openapi_schema


def _bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (as FastAPI's HTTPBearer reads it)."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def _plain(value):
    """A feature value as JSON: numbers as float, missing as None, categories (and flags) as text."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return None
    if isinstance(value, (np.integer, np.floating, int, float, Decimal)) and not isinstance(value, bool):
        return float(value)
    return str(value)
