"""The review pages at `/` of the scoring service: models, review (approve/reject), customer audit.

Server-rendered HTML (Jinja2 templates in `templates/`, no JavaScript), for people who are not Dagster
users. Same process as the API (which stays under /v1); the pages read the warehouse read-only, one
short connection per page, and never hold it (the pipeline needs it read-write).

Access: accounts with roles from the serving configuration (`accounts`, scrypt-hashed passwords, see
config.py); Starlette's signed session cookie (itsdangerous) holds the logged-in name and a CSRF token
that every POST form must send back. An anonymous visitor is sent to /login.

A decision runs `mlops approve|reject` in a child process, with the reviewer as approver and as
MLOPS_USER: the very code path of the CLI (use-case lock, the approval job, re-scoring, re-publishing,
its summary and exit code), and the job enforces the same four-eyes rule (lifecycle.approve). A child
process, not the job in this process: a run redirects the process's output to its log file and
imports Dagster, dbt and LightGBM, none of which belongs in a service answering lookups meanwhile.
"""

from __future__ import annotations

import hmac
import json
import os
import re
import secrets
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import duckdb
import pandas as pd
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from markdown_it import MarkdownIt
from starlette.middleware.sessions import SessionMiddleware

from mlops_assets.lifecycle import four_eyes_refusal, group_label, training_launcher
from mlops_assets.ml.fairness_summary import fairness_summary
from mlops_assets.registry import (
    AUDIT_VIEW,
    audit_customer,
    latest_validation,
    models_overview,
    status_history,
)
from mlops_assets.serving.config import Account
from mlops_assets.settings import PROJECT_ROOT
from mlops_assets.warehouse import table_exists

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))
# The same sentence as `mlops audit`: verdict (passed, FAILED or not evaluated) and each ratio, gated or not.
TEMPLATES.env.filters["fairness_verdict"] = fairness_summary
# Model cards are markdown written by the platform; raw HTML in them is not rendered (js-default).
MARKDOWN = MarkdownIt("js-default")
CUSTOMER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
DECISION_TIMEOUT_SECONDS = 900
SESSION_USER, SESSION_CSRF, SESSION_FLASH = "user", "csrf", "flash"


class LoginRequired(Exception):
    """Raised by pages for anonymous visitors; answered with a redirect to /login."""

    def __init__(self, next_path: str):
        self.next_path = next_path


class WarehouseBusy(Exception):
    """The warehouse is held read-write by a run (DuckDB allows no reader meanwhile)."""


@contextmanager
def read_warehouse(path: Path, wait_seconds: float = 3.0):
    """A read-only connection for one page; retries briefly while a run holds the file."""
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            connection = duckdb.connect(str(path), read_only=True)
            break
        except duckdb.IOException as error:
            if "lock" not in str(error).lower() or time.monotonic() > deadline:
                raise WarehouseBusy(str(error)) from error
            time.sleep(0.2)
    try:
        yield connection
    finally:
        connection.close()


def csrf_token(request: Request) -> str:
    token = request.session.get(SESSION_CSRF)
    if not token:
        token = request.session[SESSION_CSRF] = secrets.token_urlsafe(32)
    return token


def check_csrf(request: Request, form) -> None:
    expected = request.session.get(SESSION_CSRF)
    sent = form.get("csrf_token")
    if not expected or not isinstance(sent, str) or not hmac.compare_digest(expected, sent):
        raise HTTPException(403, "missing or invalid CSRF token; reload the page and try again")


def _safe_next(path: str | None) -> str:
    """Only paths of this site (no scheme, no //host): the login redirect is no open redirect."""
    if path and path.startswith("/") and not path.startswith("//") and "\\" not in path:
        return path
    return "/"


def _records(frame: pd.DataFrame) -> list[dict]:
    return [] if frame is None or frame.empty else frame.to_dict("records")


def _json(text) -> object:
    if text is None or (isinstance(text, float) and pd.isna(text)):
        return None
    return json.loads(text) if isinstance(text, str) else text


def model_rows(connection, schema: str) -> list[dict]:
    """Every version with its latest status, decision figures and full status history (newest first)."""
    overview = models_overview(connection, schema)
    history = status_history(connection, schema)
    launchers = dict(
        connection.execute(
            f"select model_version, json_extract_string(lineage, '$.launched_by') from {schema}.model_registry"
        ).fetchall()
    )
    events: dict[str, list[dict]] = {}
    for event in _records(history):
        events.setdefault(event["model_version"], []).append(event)
    rows = []
    for row in reversed(_records(overview)):
        row = {k: (None if isinstance(v, float) and pd.isna(v) else v) for k, v in row.items()}
        row["history"] = events.get(row["model_version"], [])
        row["launched_by"] = launchers.get(row["model_version"])
        rows.append(row)
    return rows


def latest_card(connection, schema: str, version: str) -> str | None:
    if not table_exists(connection, schema, "model_cards"):
        return None
    rows = connection.execute(
        f"select card_markdown from {schema}.model_cards where model_version = ? order by created_at desc limit 1",
        [version],
    ).fetchall()
    return rows[0][0] if rows else None


def comparison_of(connection, schema: str, version: str) -> dict | None:
    """The latest validation: both models' metrics on the same customers, the paired interval, decision."""
    frame = connection.execute(
        f"""select * from {schema}.model_validations where model_version = ?
            order by validated_at desc limit 1""",
        [version],
    ).fetchdf()
    if frame.empty:
        return None
    validation = frame.iloc[0]
    comparison = _json(validation.get("comparison")) or {}
    challenger, champion = comparison.get("challenger") or {}, comparison.get("champion") or {}
    paired = comparison.get("paired") or {}
    metrics = [
        {
            "metric": name,
            "challenger": challenger.get(name),
            "champion": champion.get(name),
            "difference": (challenger.get(name) - champion.get(name))
            if isinstance(challenger.get(name), (int, float)) and isinstance(champion.get(name), (int, float))
            else None,
            "interval": paired.get(name),
        }
        for name in challenger
        if name not in ("customers", "buyers")
    ]
    return {
        "champion_version": validation["champion_version"],
        "decision": validation["decision"],
        "reasons": _json(validation["reasons"]) or [],
        "evaluation_set": comparison.get("description") or validation.get("evaluation_set"),
        "customers": challenger.get("customers"),
        "buyers": challenger.get("buyers"),
        "primary_metric": validation["primary_metric"],
        "tolerance": validation["tolerance"],
        "metrics": metrics,
        "fairness": _json(validation["fairness"]) or {},
        "calibration_guard": comparison.get("calibration_guard"),
        "validated_at": validation["validated_at"],
    }


def audit_rows(connection, schema: str, customer_id: str) -> list[dict]:
    if not table_exists(connection, schema, AUDIT_VIEW):
        return []
    rows = []
    for row in _records(audit_customer(connection, schema, customer_id)):
        row = {k: (None if isinstance(v, float) and pd.isna(v) else v) for k, v in row.items()}
        for key in ("reasons", "validation_reasons", "fairness", "test_metrics"):
            row[key] = _json(row.get(key))
        rows.append(row)
    return rows


def version_facts(connection, schema: str, version: str) -> dict | None:
    """What the compare page shows of one version: from the registry, no artefact loaded."""
    frame = connection.execute(
        f"""select model_version, sha256, features, params, metrics, trained_at, training_set_fingerprint,
                   lineage, reference_profile is not null as has_reference
            from {schema}.model_registry where model_version = ?""",
        [version],
    ).fetchdf()
    if frame.empty:
        return None
    row = frame.iloc[0].to_dict()
    lineage = _json(row["lineage"]) or {}
    return {
        "version": version,
        "sha256": row["sha256"],
        "features": {f["name"]: f.get("type") for f in _json(row["features"]) or []},
        "params": _json(row["params"]) or {},
        "metrics": _json(row["metrics"]) or {},
        "trained_at": row["trained_at"],
        "fingerprint": row["training_set_fingerprint"],
        "training_window": lineage.get("training_window"),
        "training_rows": lineage.get("training_rows"),
        "launched_by": lineage.get("launched_by"),
        "trigger": lineage.get("trigger"),
        "has_reference": bool(row["has_reference"]),
    }


def validation_view(connection, schema: str, version: str, labels: dict[str, str]) -> dict | None:
    """A version's own latest validation for the compare page: decile lift and reliability chart, fairness
    verdict and its groups (with their code labels)."""
    validation = latest_validation(connection, schema, version)
    if validation is None:
        return None
    report = _json(validation["report"]) or {}
    groups = [{**row, "group": group_label(row["group"], labels)} for row in report.get("fairness_table") or []]
    return {
        "deciles": report.get("deciles") or [],
        "calibration": report.get("calibration") or [],
        "evaluation_set": report.get("evaluation_set") or validation.get("evaluation_set"),
        "fairness": _json(validation["fairness"]) or {},
        "fairness_groups": groups,
    }


def compared_on_same_customers(connection, schema: str, a: str, b: str) -> tuple[str, dict] | None:
    """The latest validation of one version against the other, if there ever was one: (challenger, it)."""
    for challenger, champion in ((a, b), (b, a)):
        comparison = comparison_of(connection, schema, challenger)
        if comparison and comparison["champion_version"] == champion:
            return challenger, comparison
    return None


def run_decision(action: str, use_case: str, version: str, reviewer: str, comment: str) -> tuple[int, dict | None, str]:
    """`mlops approve|reject` as the reviewer; returns (exit code, JSON summary, error output)."""
    person = "--approver" if action == "approve" else "--reviewer"
    command = [sys.executable, "-m", "mlops_assets.cli", action, "--use-case", use_case, "--version", version]
    command += [person, reviewer, "--comment", comment, "--json", "--no-wait"]
    finished = subprocess.run(
        command,
        env={**os.environ, "MLOPS_USER": reviewer},
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=DECISION_TIMEOUT_SECONDS,
    )
    try:  # --json: stdout is the run summary (progress lines go to stderr)
        summary = json.loads(finished.stdout[finished.stdout.index("{") :])
    except ValueError:
        summary = None
    return finished.returncode, summary, finished.stderr[-2000:]


def build_review_router(service) -> APIRouter:
    """The pages over `service` (app.Service): its settings, use cases and accounts."""
    router = APIRouter(include_in_schema=False)
    settings = service.settings
    use_cases = service.definitions

    def user_of(request: Request) -> Account:
        account = service.config.account(request.session.get(SESSION_USER) or "")
        if account is None:
            path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise LoginRequired(path)
        return account

    def use_case_of(name: str):
        if name not in use_cases:
            raise HTTPException(404, f"unknown use case {name!r}; served: {', '.join(use_cases)}")
        return use_cases[name]

    def page(request: Request, template: str, user: Account | None, status_code: int = 200, **context):
        flash = request.session.pop(SESSION_FLASH, None)
        return TEMPLATES.TemplateResponse(
            request,
            template,
            {
                "user": user,
                "use_cases": use_cases,
                "csrf_token": csrf_token(request),
                "flash": flash,
                **context,
            },
            status_code=status_code,
        )

    @router.get("/login", response_class=HTMLResponse)
    async def login_page(request: Request, next: str = "/"):
        return page(request, "login.html", None, next_path=_safe_next(next), error=None)

    @router.post("/login", response_class=HTMLResponse)
    async def login(request: Request):
        form = await request.form()
        check_csrf(request, form)
        name, password = str(form.get("username", "")), str(form.get("password", ""))
        next_path = _safe_next(str(form.get("next", "/")))
        account = service.config.account_for(name, password)
        if account is None:
            return page(
                request, "login.html", None, 401, next_path=next_path, error="Unknown user name or wrong password."
            )
        request.session.clear()  # a fresh session (and CSRF token) for the logged-in user
        request.session[SESSION_USER] = account.name
        return RedirectResponse(next_path, status_code=303)

    @router.post("/logout")
    async def logout(request: Request):
        check_csrf(request, await request.form())
        request.session.clear()
        return RedirectResponse("/login", status_code=303)

    @router.get("/", response_class=HTMLResponse)
    async def home(request: Request):
        user_of(request)
        return RedirectResponse(f"/models/{next(iter(use_cases))}", status_code=303)

    @router.get("/models/{use_case}", response_class=HTMLResponse)
    def models(request: Request, use_case: str):
        user = user_of(request)
        definition = use_case_of(use_case)
        with read_warehouse(settings.duckdb_path) as connection:
            rows = model_rows(connection, use_case) if table_exists(connection, use_case, "model_registry") else []
        return page(request, "models.html", user, use_case=definition, rows=rows)

    @router.get("/models/{use_case}/{version}", response_class=HTMLResponse)
    def model(request: Request, use_case: str, version: str):
        user = user_of(request)
        definition = use_case_of(use_case)
        with read_warehouse(settings.duckdb_path) as connection:
            row = next((r for r in model_rows(connection, use_case) if r["model_version"] == version), None)
            if row is None:
                raise HTTPException(404, f"{use_case}: no model version {version!r}")
            card = latest_card(connection, use_case, version)
            comparison = comparison_of(connection, use_case, version)
            versions = [
                r[0]
                for r in connection.execute(
                    f"select model_version from {use_case}.model_registry order by trained_at desc"
                ).fetchall()
            ]
        return page(
            request,
            "model.html",
            user,
            use_case=definition,
            row=row,
            card_html=MARKDOWN.render(card) if card else None,
            comparison=comparison,
            other_versions=[v for v in versions if v != version],
            trainer_is_user=bool(row["launched_by"]) and four_eyes_refusal(row["launched_by"], user.name) is not None,
        )

    @router.get("/compare/{use_case}", response_class=HTMLResponse)
    def compare(request: Request, use_case: str, a: str, b: str):
        user = user_of(request)
        definition = use_case_of(use_case)
        with read_warehouse(settings.duckdb_path) as connection:
            left, right = version_facts(connection, use_case, a), version_facts(connection, use_case, b)
            if left is None or right is None:
                raise HTTPException(404, f"{use_case}: no model version {a if left is None else b!r}")
            same = compared_on_same_customers(connection, use_case, a, b)
            labels = definition.fairness_group_labels()  # two CSV reads: once per page, not per version
            validations = tuple(validation_view(connection, use_case, v, labels) for v in (a, b))
        params = sorted(set(left["params"]) | set(right["params"]))
        metrics = [m for m in left["metrics"] if m not in ("customers", "buyers")]
        return page(
            request,
            "compare.html",
            user,
            use_case=definition,
            a=left,
            b=right,
            params_differing=[p for p in params if left["params"].get(p) != right["params"].get(p)],
            params_same=[p for p in params if left["params"].get(p) == right["params"].get(p)],
            only_a=sorted(set(left["features"]) - set(right["features"])),
            only_b=sorted(set(right["features"]) - set(left["features"])),
            metrics=metrics,
            validations=validations,
            same=same,
        )

    @router.post("/models/{use_case}/{version}/decision")
    async def decide(request: Request, use_case: str, version: str):
        user = user_of(request)
        form = await request.form()
        check_csrf(request, form)
        use_case_of(use_case)
        if "reviewer" not in user.roles:
            raise HTTPException(403, f"{user.name} has no reviewer role")
        action, comment = str(form.get("action", "")), str(form.get("comment", "")).strip()
        back = f"/models/{use_case}/{quote(version)}"
        done = {"approve": "approved", "reject": "rejected"}.get(action, action)

        def flash(kind: str, text: str) -> RedirectResponse:
            request.session[SESSION_FLASH] = {"kind": kind, "text": text}
            return RedirectResponse(back, status_code=303)

        if action not in ("approve", "reject"):
            raise HTTPException(400, "action must be approve or reject")
        if not comment:
            return flash("error", f"Not {done}: a comment saying why is required.")
        with read_warehouse(settings.duckdb_path) as connection:
            row = next((r for r in model_rows(connection, use_case) if r["model_version"] == version), None)
            if row is None:
                raise HTTPException(404, f"{use_case}: no model version {version!r}")
            launcher = training_launcher(connection, use_case, version)
        if row["status"] != "pending_approval":
            return flash("error", f"Not {done}: {version} is {row['status']}, not pending approval.")
        if action == "approve" and (refusal := four_eyes_refusal(launcher, user.name)):
            return flash("error", f"Not approved: {refusal}.")
        # A run takes tens of seconds; in a worker thread so lookups go on meanwhile.
        from starlette.concurrency import run_in_threadpool

        code, summary, errors = await run_in_threadpool(run_decision, action, use_case, version, user.name, comment)
        if code == 0:
            summary = summary or {}
            text = f"{version} {done} by {user.name}." + (
                f" Scores re-published with the champion {summary.get('champion')}." if summary.get("published") else ""
            )
            return flash("ok", text)
        reason = "; ".join((summary or {}).get("failed_steps") or []) or (
            (summary or {}).get("not_published_because") or " ".join(errors.strip().splitlines()[-1:])
        )
        return flash("error", f"Not {done} (mlops {action} exited {code}): {reason}")

    @router.get("/audit/{use_case}", response_class=HTMLResponse)
    def audit(request: Request, use_case: str, customer: str = ""):
        user = user_of(request)
        definition = use_case_of(use_case)
        rows, error = None, None
        customer = customer.strip()
        if customer:
            if "auditor" not in user.roles:
                raise HTTPException(403, f"{user.name} has no auditor role")
            if not CUSTOMER_ID.match(customer):
                error = "A customer id is letters, digits, '.', '_' or '-' (at most 64)."
            else:
                with read_warehouse(settings.duckdb_path) as connection:
                    rows = audit_rows(connection, use_case, customer)
        return page(request, "audit.html", user, use_case=definition, customer=customer, rows=rows, error=error)

    @router.get("/audit/{use_case}/report")
    def audit_report(request: Request, use_case: str, customer: str):
        user = user_of(request)
        definition = use_case_of(use_case)
        if "auditor" not in user.roles:
            raise HTTPException(403, f"{user.name} has no auditor role")
        if not CUSTOMER_ID.match(customer):
            raise HTTPException(422, "invalid customer id")
        with read_warehouse(settings.duckdb_path) as connection:
            rows = audit_rows(connection, use_case, customer)
        generated = datetime.now(UTC)
        html = TEMPLATES.get_template("audit_report.html").render(
            use_case=definition, customer=customer, rows=rows, user=user, generated_at=generated
        )
        filename = f"audit-{use_case}-{customer}-{generated:%Y%m%dT%H%M%SZ}.html"
        return Response(
            html,
            media_type="text/html; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    return router


# Paths of the API, its docs and metrics: no session cookie, and errors as JSON rather than pages.
NOT_PAGES = ("/v1/", "/metrics", "/docs", "/openapi", "/redoc", "/static-offline-docs")


class PageSessions(SessionMiddleware):
    """Starlette's signed session cookie, for the review pages only: API callers send keys, not cookies,
    and reading the cookie header and wrapping both response messages for every API request was 5% of
    a lookup's CPU (in process, 3 runs each: 0.286-0.289 ms per lookup with it, 0.271-0.275 ms without)."""

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(NOT_PAGES):
            await self.app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def install_review_pages(app, service) -> None:
    """Routes, the signed session cookie and the handlers turning refusals into pages."""
    secret = os.environ.get("MLOPS_SESSION_SECRET") or secrets.token_urlsafe(32)
    # Without MLOPS_SESSION_SECRET a random key: sessions end when the service restarts.
    app.add_middleware(
        PageSessions,
        secret_key=secret,
        session_cookie="mlops_session",
        same_site="strict",
        max_age=8 * 3600,
        https_only=False,
    )
    app.include_router(build_review_router(service))

    @app.exception_handler(LoginRequired)
    async def to_login(request: Request, error: LoginRequired):
        return RedirectResponse(f"/login?next={quote(error.next_path, safe='')}", status_code=303)

    from fastapi.exception_handlers import http_exception_handler
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(StarletteHTTPException)
    async def error_page(request: Request, error: StarletteHTTPException):
        """JSON for the API (as before), a page for people."""
        if request.url.path.startswith(NOT_PAGES):
            return await http_exception_handler(request, error)
        return TEMPLATES.TemplateResponse(
            request,
            "error.html",
            {"user": None, "use_cases": service.definitions, "status": error.status_code, "detail": error.detail},
            status_code=error.status_code,
        )

    @app.exception_handler(WarehouseBusy)
    async def busy(request: Request, error: WarehouseBusy):
        return HTMLResponse(
            "<h1>The warehouse is busy</h1><p>A pipeline run is writing it; reload in a moment.</p>",
            status_code=503,
            headers={"Retry-After": "5"},
        )
