"""The scoring service, as a real uvicorn process on a free loopback port, called over HTTP.

One platform (a copy of the session's completed caravan pipeline, so the shared fixture is never
changed) and one service with two worker processes (`mlops serve --workers 2`, as in production: every
answer below may come from either) serve the whole module; the tests run in file order: lookups and
scores against the batch, bad input, then a model pending approval (shadow, canary), its approval
under a client loop (hot swap), a tampered artefact, a rollback, and a graceful shutdown.
"""

from __future__ import annotations

import gc
import json
import os
import re
import threading
import time
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
import httpx
import pandas as pd
import pytest
from conftest import copy_of_first_run, make_harness

from mlops_assets.integrity import ArtifactTamperedError, recorded_signature, signing_key
from mlops_assets.ml.artifacts import artifact_sha256
from mlops_assets.ml.training import matrix_of_values
from mlops_assets.serving.app import keep_out_of_garbage_collection
from mlops_assets.serving.artefacts import load_served_model, models_dir, read_manifest
from mlops_assets.serving.config import ServingConfig, hash_api_key, hash_password, new_api_key
from mlops_assets.serving.features import OnlineFeatures, RecordError, compile_feature_sql
from mlops_assets.serving.process import ServiceProcess
from mlops_assets.serving.records import RequestLog, alerts_path, requests_dir
from mlops_assets.serving.scoring import canary_bucket, score_with
from mlops_assets.synthetic.swiss_bank import write_parquet
from mlops_assets.use_cases import get_use_case

CANARY_SHARE = 0.3
WORKERS = 2
REVIEWER = {"name": "ada", "password": "correct horse battery staple"}
PENDING_MODEL = {"ops": {"caravan__propensity_model": {"config": {"num_leaves": 15, "max_rounds": 300}}}}


@dataclass
class Platform:
    harness: object
    service: ServiceProcess
    full_key: str
    lookup_key: str

    def get(self, path: str, key: str | None = None, **kwargs) -> httpx.Response:
        headers = {"X-API-Key": key or self.full_key}
        return httpx.get(self.service.url + path, headers=headers, timeout=30, **kwargs)

    def score(self, records: list[dict], key: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key or self.full_key}"}
        return httpx.post(
            self.service.url + "/v1/use-cases/caravan/score", json={"records": records}, headers=headers, timeout=60
        )


def _published(platform: Platform) -> pd.DataFrame:
    path = platform.harness.settings.published_dir / "caravan.duckdb"
    with duckdb.connect(str(path), read_only=True) as connection:
        return connection.execute("select * from customer_scores").fetchdf().set_index("customer_id")


def _raw_records(platform: Platform, customer_ids: list[str]) -> list[dict]:
    """The export rows of these customers as the pipeline loaded them (text, no load columns)."""
    with duckdb.connect(str(platform.harness.settings.duckdb_path), read_only=True) as connection:
        raw = connection.execute(
            "select * from caravan.raw_customers where customer_id in (select unnest(?))", [customer_ids]
        ).fetchdf()
    raw = raw.drop(columns=[c for c in raw.columns if c.startswith("_")])
    return raw.to_dict("records")


def _manual_caravan():
    caravan = get_use_case("caravan")
    # Manual approval, and a tolerance that lets any model through the comparison: the next model
    # waits for approval, which is what a shadow model is.
    promotion = caravan.promotion.model_copy(update={"approval": "manual", "tolerance": 1.0})
    return caravan.model_copy(update={"promotion": promotion})


def _serving_config(home, full_key: str, lookup_key: str, **overrides) -> Path:
    config = home / "serving.yaml"
    config.write_text(
        json.dumps(
            {
                "api_keys": [
                    {"name": "crm", "sha256": hash_api_key(full_key), "scopes": ["lookup", "score"]},
                    {"name": "advisor-app", "sha256": hash_api_key(lookup_key), "scopes": ["lookup"]},
                ],
                "use_cases": {"caravan": {"canary_share": CANARY_SHARE}},
                "max_body_bytes": 200_000,
                "max_records": 50,
                "watch_interval_seconds": 0.1,
                **overrides,
            }
        )
    )
    return config


@contextmanager
def _serving(completed_pipeline, home: Path, use_cases=None, workers: int = 1, **config_overrides):
    """A copy of the session's completed pipeline, as its first run left it, and a service over it."""
    harness = copy_of_first_run(completed_pipeline, home, use_cases)
    full_key, lookup_key = new_api_key(), new_api_key()
    config = _serving_config(home, full_key, lookup_key, **config_overrides)
    service = ServiceProcess(home, config, home / "service.log", workers=workers)
    try:
        service.wait_until_ready()
        yield Platform(harness, service, full_key, lookup_key)
    finally:
        service.stop()


@pytest.fixture(scope="module")
def platform(completed_pipeline, tmp_path_factory):
    home = tmp_path_factory.mktemp("serving") / "home"
    reviewer = {"name": REVIEWER["name"], "password_scrypt": hash_password(REVIEWER["password"]), "roles": ["reviewer"]}
    with _serving(completed_pipeline, home, (_manual_caravan(),), workers=WORKERS, accounts=[reviewer]) as served:
        yield served


def test_ready_and_use_cases_name_the_verified_champion(platform):
    ready = httpx.get(platform.service.url + "/v1/ready").json()
    manifest = read_manifest(platform.harness.settings.published_dir, "caravan")
    champion = manifest["champion"]["model_version"]
    assert ready == {
        "ready": True,
        "use_cases": {"caravan": {"champion": champion, "published_scores": champion, "ready": True}},
    }
    listing = platform.get("/v1/use-cases").json()
    assert listing[0]["champion_version"] == champion and listing[0]["published_customers"] == 5822
    assert listing[0]["shadow_versions"] == []
    schema = httpx.get(platform.service.url + "/openapi.json").json()
    assert schema["info"]["title"]
    # The docs offer both ways to send a key, and every scores endpoint requires one.
    assert set(schema["components"]["securitySchemes"]) == {"APIKeyHeader", "HTTPBearer"}
    for path in ("/v1/use-cases", "/v1/use-cases/{use_case}/customers/{customer_id}"):
        assert schema["paths"][path]["get"]["security"] == [{"APIKeyHeader": []}, {"HTTPBearer": []}]
    assert "security" not in schema["paths"]["/v1/health"]["get"]
    # The docs page loads Swagger UI from the service itself (no CDN: servers often have no internet).
    docs = httpx.get(platform.service.url + "/docs").text
    scripts = re.findall(r'<script src="([^"]+)"', docs)
    assert scripts and all(src.startswith("/") for src in scripts) and "cdn" not in docs
    for src in scripts:
        assert httpx.get(platform.service.url + src).status_code == 200


def test_lookup_returns_the_published_score_rank_decile_and_reasons(platform):
    published = _published(platform)
    top = published.sort_values("rank").index[0]
    answer = platform.get(f"/v1/use-cases/caravan/customers/{top}", key=platform.lookup_key)
    assert answer.status_code == 200
    body = answer.json()
    row = published.loc[top]
    assert (body["score"], body["rank"], body["decile"]) == (row["score"], row["rank"], row["decile"])
    assert body["model_version"] == row["model_version"]
    assert [r["feature"] for r in body["reasons"]] == [
        row[f"reason_{i}_feature"] for i in (1, 2, 3) if isinstance(row[f"reason_{i}_feature"], str)
    ]
    assert body["reasons"] and body["reasons"][0]["contribution"] == row["reason_1_contribution"]
    unexplained = published[published["decile"] == 5].index[0]
    assert platform.get(f"/v1/use-cases/caravan/customers/{unexplained}").json()["reasons"] == []


def test_service_score_equals_the_batch_score_for_the_same_record(platform):
    published = _published(platform)
    # Customers outside the canary share, so the champion answers (the canary is tested below).
    customers = [c for c in published.sort_values("rank").index[:40] if canary_bucket("caravan", c) >= CANARY_SHARE]
    customers = customers[:8]
    answer = platform.score(_raw_records(platform, customers))
    assert answer.status_code == 200, answer.text
    results = {r["customer_id"]: r for r in answer.json()["results"]}
    assert set(results) == set(customers)
    for customer in customers:
        row = published.loc[customer]
        result = results[customer]
        assert result["model_version"] == row["model_version"] and result["model_role"] == "champion"
        assert result["probability"] == pytest.approx(row["score"], rel=1e-12, abs=1e-15)
        # Same SHAP reasons as the batch path (these are top-decile customers, so the batch explained them).
        assert [r["feature"] for r in result["reasons"]][:1] == [row["reason_1_feature"]]
        assert result["reasons"][0]["contribution"] == pytest.approx(row["reason_1_contribution"], rel=1e-12)


def test_bad_requests_get_clear_status_codes(platform):
    customer = _published(platform).index[0]
    record = _raw_records(platform, [customer])[0]
    url = platform.service.url
    lookup = f"/v1/use-cases/caravan/customers/{customer}"
    assert httpx.get(url + lookup).status_code == 401
    assert httpx.get(url + lookup, headers={"X-API-Key": "mlk_wrong"}).status_code == 401
    assert httpx.get(url + lookup, headers={"Authorization": "Bearer mlk_wrong"}).status_code == 401
    assert httpx.get(url + lookup, headers={"Authorization": f"Basic {platform.full_key}"}).status_code == 401
    assert httpx.get(url + lookup, headers={"Authorization": f"bearer {platform.full_key}"}).status_code == 200
    forbidden = platform.score([record], key=platform.lookup_key)
    assert forbidden.status_code == 403 and "score" in forbidden.json()["detail"]
    assert platform.get("/v1/use-cases/caravan/customers/CV9999999").status_code == 404
    assert platform.get(f"/v1/use-cases/no_such_case/customers/{customer}").status_code == 404
    bad_id = platform.get("/v1/use-cases/caravan/customers/x';drop table customer_scores;--")
    assert bad_id.status_code == 422 and bad_id.json()["detail"][0]["field"] == "customer_id"

    def problems(records) -> list[dict]:
        answer = platform.score(records)
        assert answer.status_code == 422, answer.text
        return answer.json()["detail"]

    assert problems([{**record, "MOSTYPE": "abc"}]) == [
        {"field": "records[0].MOSTYPE", "rule": "'abc' is not a whole number"}
    ]
    assert problems([record, {**record, "MOSTYPE": "99"}]) == [
        {"field": "records[0].customer_id", "rule": "duplicate customer id, superseded by row 2"},
        {"field": "records[1].MOSTYPE", "rule": "99 is outside 1..41"},
    ]
    assert problems([{**record, "customer_id": "NEW1", "MOSTYPE": " 3x"}])[0]["field"] == "records[0].MOSTYPE"
    assert problems([{**record, "MGEMLEEF": None}]) == [{"field": "records[0].MGEMLEEF", "rule": "missing"}]
    unknown = problems([{**record, "MOSTYPEE": "3"}])
    assert unknown == [{"field": "records[0].MOSTYPEE", "rule": "unknown field: not a column of the export"}]
    missing = dict(record)
    del missing["PPERSAUT"]
    assert problems([missing])[0]["field"] == "records[0].PPERSAUT"
    assert problems([])[0]["field"] == "records"
    assert problems([{**record, "MOSTYPE": [1, 2]}])[0]["field"].startswith("records[0].MOSTYPE")
    not_json = httpx.post(url + "/v1/use-cases/caravan/score", content=b"{", headers={"X-API-Key": platform.full_key})
    assert not_json.status_code == 422
    too_many = platform.score([{**record, "customer_id": f"N{i}"} for i in range(51)])
    assert too_many.status_code == 413 and "at most 50" in too_many.json()["detail"]
    huge = httpx.post(
        url + "/v1/use-cases/caravan/score",
        content=b'{"records": [' + b" " * 300_000 + b"]}",
        headers={"X-API-Key": platform.full_key, "Content-Type": "application/json"},
    )
    assert huge.status_code == 413
    # A new customer, never in a batch, is scored too.
    assert platform.score([{**record, "customer_id": "NEW-1"}]).json()["results"][0]["customer_id"] == "NEW-1"


def test_every_request_is_recorded_with_caller_latency_and_versions(platform):
    def logged_lines() -> list[dict]:
        return [
            json.loads(line)
            for path in requests_dir(platform.harness.settings.home, "caravan").glob("*.jsonl")
            for line in path.read_text().splitlines()
        ]

    counted = (("lookup", 200), ("score", 200), ("score", 422))

    def requests_total(metrics: dict, endpoint: str, status: int) -> float | None:
        return metrics.get(("mlops_serving_requests_total", (("endpoint", endpoint), ("status", str(status)))))

    # A request counts in /metrics a moment before its line is written: a request of an earlier test
    # still finishing on a loaded machine can be in one and not yet in the other. Read both until
    # they agree (at most 10 s); the assertions below say what differs if they never do.
    deadline = time.monotonic() + 10
    while True:
        lines, metrics = logged_lines(), _metrics(platform)
        logged = {
            (endpoint, status): sum(line["endpoint"] == endpoint and line["status"] == status for line in lines)
            for endpoint, status in counted
        }
        if all(requests_total(metrics, *key) == n for key, n in logged.items()) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    by_status = {}
    for line in lines:
        by_status.setdefault(line["status"], []).append(line)
    assert {200, 401, 403, 404, 413, 422} <= set(by_status)
    scored = [line for line in by_status[200] if line["endpoint"] == "score"]
    assert scored and all(line["caller"] == "crm" and line["latency_ms"] > 0 for line in scored)
    first = scored[0]["records"][0]
    assert first["features"]["customer_subtype"] is not None and first["champion"]["model_version"]
    assert scored[0]["inputs"][0]["MOSTYPE"] is not None
    # Both worker processes answered, and /metrics adds up what each counted.
    assert len({line["worker"] for line in lines}) == WORKERS
    for endpoint, status in counted:
        assert logged[(endpoint, status)] > 0
        assert requests_total(metrics, endpoint, status) == logged[(endpoint, status)], (endpoint, status)
    assert metrics[("mlops_serving_errors_total", (("endpoint", "score"), ("status", "422")))] > 0
    assert any(
        name == "mlops_serving_request_seconds_bucket" and ("endpoint", "lookup") in labels for name, labels in metrics
    )
    champion = read_manifest(platform.harness.settings.published_dir, "caravan")["champion"]["model_version"]
    assert _workers_serving(platform, "champion", champion) == WORKERS


def _metrics(platform: Platform) -> dict[tuple[str, tuple], float]:
    """/metrics as {(name, sorted labels): value}."""
    parsed = {}
    for line in httpx.get(platform.service.url + "/metrics").text.splitlines():
        match = re.fullmatch(r"(\w+)(?:\{(.*)\})? (\S+)", line)
        if match and not line.startswith("#"):
            labels = tuple(sorted(re.findall(r'(\w+)="([^"]*)"', match.group(2) or "")))
            parsed[(match.group(1), labels)] = float(match.group(3))
    return parsed


def _workers_serving(platform: Platform, role: str, version: str) -> int:
    """How many worker processes serve `version` in `role` now (mlops_serving_model_info, one series a worker)."""
    return sum(
        value == 1 and ("model_version", version) in labels and ("role", role) in labels
        for (name, labels), value in _metrics(platform).items()
        if name == "mlops_serving_model_info"
    )


def _wait_for(condition, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met within the timeout")


def test_pending_model_scores_in_shadow_and_answers_a_sticky_canary_share(platform):
    result = platform.harness.run("caravan_retrain", PENDING_MODEL)
    assert result.success
    manifest = read_manifest(platform.harness.settings.published_dir, "caravan")
    assert len(manifest["shadows"]) == 1 and manifest["shadows"][0]["status"] == "pending_approval"
    pending = manifest["shadows"][0]["model_version"]
    champion = manifest["champion"]["model_version"]
    _wait_for(lambda: _workers_serving(platform, "shadow", pending) == WORKERS)
    assert platform.get("/v1/use-cases").json()[0]["shadow_versions"] == [pending]

    customers = list(_published(platform).index[:60])
    records = _raw_records(platform, customers)
    first = {r["customer_id"]: r for r in platform.score(records[:30]).json()["results"]}
    first.update({r["customer_id"]: r for r in platform.score(records[30:]).json()["results"]})
    again = {r["customer_id"]: r for r in platform.score(records[30:]).json()["results"]}
    again.update({r["customer_id"]: r for r in platform.score(records[:30]).json()["results"]})
    canary = {c for c in customers if canary_bucket("caravan", c) < CANARY_SHARE}
    assert 0 < len(canary) < len(customers)
    for customer in customers:
        expected = pending if customer in canary else champion
        assert first[customer]["model_version"] == again[customer]["model_version"] == expected
        assert first[customer]["probability"] == again[customer]["probability"]
        assert first[customer]["model_role"] == ("canary" if customer in canary else "champion")

    # Both models scored every record; the records carry both scores, and the assets compare them.
    run = platform.harness.run("caravan_served_traffic")
    assert run.success
    (drift_check,) = run.get_asset_check_evaluations()
    assert drift_check.check_name == "served_feature_drift"
    # The records served here are the top of the ranking, not the population the model was trained on:
    # the check sees it (it judges once 50+ records were served).
    assert not drift_check.passed and "drifted feature(s) in" in drift_check.description
    assert drift_check.metadata["served_records"].value >= 2 * len(customers)
    with duckdb.connect(str(platform.harness.settings.duckdb_path), read_only=True) as connection:
        shadowed = connection.execute(
            "select count(*) from caravan.served_scores where shadows like ?", [f"%{pending}%"]
        ).fetchone()[0]
        comparison = connection.execute("select * from caravan.shadow_comparison").fetchdf()
        requests = connection.execute("select count(*), count(distinct status) from caravan.served_requests").fetchone()
    assert shadowed >= 2 * len(customers)
    assert comparison[["champion_version", "shadow_version"]].values.tolist() == [[champion, pending]]
    assert comparison["records"].iloc[0] == shadowed and 0 < comparison["correlation"].iloc[0] <= 1
    assert requests[0] > 20 and requests[1] >= 5
    # A second run takes only what was logged since (byte offsets).
    assert platform.harness.run("caravan_served_traffic").success
    with duckdb.connect(str(platform.harness.settings.duckdb_path), read_only=True) as connection:
        assert connection.execute("select count(*) from caravan.served_requests").fetchone()[0] == requests[0] + 0


def _client_loop(platform, customers, records, stop, answers, errors):
    """Alternate lookups and scores until stopped; keep every answer."""
    with httpx.Client(headers={"X-API-Key": platform.full_key}, timeout=30) as client:
        i = 0
        while not stop.is_set():
            customer = customers[i % len(customers)]
            try:
                if i % 2:
                    response = client.get(f"{platform.service.url}/v1/use-cases/caravan/customers/{customer}")
                else:
                    response = client.post(
                        f"{platform.service.url}/v1/use-cases/caravan/score", json={"records": [records[customer]]}
                    )
                if response.status_code != 200:
                    errors.append((response.status_code, response.text))
                else:
                    answers.append(("lookup" if i % 2 else "score", customer, response.json()))
            except httpx.HTTPError as error:
                errors.append(("transport", repr(error)))
            i += 1


def test_approval_swaps_scores_and_model_under_load_without_a_failed_or_mixed_answer(platform):
    manifest = read_manifest(platform.harness.settings.published_dir, "caravan")
    old, new = manifest["champion"]["model_version"], manifest["shadows"][0]["model_version"]
    old_scores = _published(platform)["score"]
    customers = [c for c in old_scores.index[:200] if canary_bucket("caravan", c) >= CANARY_SHARE][:20]
    records = {r["customer_id"]: r for r in _raw_records(platform, customers)}
    stop, answers, errors = threading.Event(), [], []
    loop = threading.Thread(target=_client_loop, args=(platform, customers, records, stop, answers, errors))
    loop.start()
    try:
        time.sleep(1)
        config = {"action": "approve", "model_version": new, "actor": "Ada Risk", "comment": "shadow looked fine"}
        result = platform.harness.run(
            "caravan_model_approval", {"ops": {"caravan__champion_model": {"config": config}}}
        )
        assert result.success
        _wait_for(lambda: _workers_serving(platform, "champion", new) == WORKERS)
        time.sleep(1)
    finally:
        stop.set()
        loop.join()
    new_scores = _published(platform)["score"]
    assert errors == []
    expected = {old: old_scores, new: new_scores}
    versions_seen = set()
    for kind, customer, body in answers:
        if kind == "lookup":
            version, value = body["model_version"], body["score"]
        else:
            (only,) = body["results"]
            version, value = only["model_version"], only["probability"]
        versions_seen.add((kind, version))
        # Each answer is one complete version: the score is that version's score for the customer.
        assert value == pytest.approx(expected[version][customer], rel=1e-12), (kind, version, customer)
    assert {("lookup", old), ("lookup", new), ("score", old), ("score", new)} <= versions_seen
    assert platform.get("/v1/use-cases").json()[0]["shadow_versions"] == []


def test_tampered_artefact_is_refused_with_an_alert_and_the_champion_keeps_serving(platform):
    published_dir = platform.harness.settings.published_dir
    manifest = read_manifest(published_dir, "caravan")
    champion = manifest["champion"]["model_version"]
    former = next(
        path.name.removesuffix(".lgb.txt")
        for path in models_dir(published_dir, "caravan").glob("*.lgb.txt")
        if not path.name.startswith(champion)
    )
    folder = models_dir(published_dir, "caravan")
    key = signing_key(platform.harness.settings.home, create=False)
    record = json.loads((folder / f"{former}.json").read_text())
    entry = {"model_version": former, "sha256": record["sha256"], "signature": None, "status": "champion"}
    with pytest.raises(ArtifactTamperedError, match="no signature"):
        load_served_model(folder, entry, key)  # an unsigned model is refused
    with duckdb.connect(str(platform.harness.settings.duckdb_path), read_only=True) as connection:
        entry["signature"] = recorded_signature(connection, "caravan", former)
    assert load_served_model(folder, entry, key).version == former  # signed and unchanged: served
    with pytest.raises(ArtifactTamperedError, match="does not match the signature"):
        load_served_model(folder, entry, b"a key other than the pipeline's")
    # Changed text with every sha256 recomputed (record and manifest): only the signature catches it.
    text_path = folder / f"{former}.lgb.txt"
    original_text = text_path.read_text()
    forged_text = original_text.replace("leaf_value=", "leaf_value=1", 1)
    forged_sha = artifact_sha256(forged_text, json.loads(record["calibration"]))
    text_path.write_text(forged_text)
    (folder / f"{former}.json").write_text(json.dumps({**record, "sha256": forged_sha}))
    with pytest.raises(ArtifactTamperedError, match="does not match the signature"):
        load_served_model(folder, {**entry, "sha256": forged_sha}, key)
    (folder / f"{former}.json").write_text(json.dumps(record))
    # Changed text, checksums left alone: the checksum already refuses it.
    with pytest.raises(Exception, match="checksum mismatch"):
        load_served_model(folder, entry, key)
    # A publication naming the tampered model as champion (as a rollback would).
    tampered = {**manifest, "champion": entry}
    (folder / "serving.json").write_text(json.dumps(tampered))
    # Each worker refuses it; the first raises the alert, the other logs that it was raised.
    _wait_for(lambda: "alert raised by another worker" in platform.service.log.read_text())
    listing = platform.get("/v1/use-cases").json()[0]
    assert former in listing["refused_models"] and "checksum mismatch" in listing["refused_models"][former]
    assert listing["champion_version"] == champion and _workers_serving(platform, "champion", champion) == WORKERS
    customer = _published(platform).index[0]
    scored = platform.score(_raw_records(platform, [customer])).json()["results"][0]
    assert scored["model_version"] == champion
    alerts = [json.loads(line) for line in alerts_path(platform.harness.settings.home).read_text().splitlines()]
    assert [a["kind"] for a in alerts if former in a["message"]] == ["artefact_refused"]
    # The pipeline's rollback re-exports the former champion from the registry (the checksum there is
    # the truth), and the service swaps to it.
    config = {"action": "rollback", "model_version": former, "actor": "Ada Risk", "comment": "incident 42"}
    result = platform.harness.run("caravan_model_rollback", {"ops": {"caravan__champion_model": {"config": config}}})
    assert result.success
    _wait_for(lambda: _workers_serving(platform, "champion", former) == WORKERS)
    assert platform.get("/v1/use-cases").json()[0]["refused_models"] == {}
    # The alert reaches the warehouse with the next served-traffic run.
    assert platform.harness.run("caravan_served_traffic").success
    with duckdb.connect(str(platform.harness.settings.duckdb_path), read_only=True) as connection:
        kinds = [row[0] for row in connection.execute("select kind from caravan.alerts").fetchall()]
    assert "artefact_refused" in kinds


def test_a_review_page_login_holds_on_every_worker(platform):
    """The workers sign session cookies with one secret: a login made on one worker holds on the other."""
    fresh_connections = httpx.Limits(max_keepalive_connections=0)  # each request may go to either worker
    with httpx.Client(base_url=platform.service.url, limits=fresh_connections, timeout=30) as browser:
        assert browser.get("/models/caravan").status_code == 303  # to the login page
        token = re.search(r'name="csrf_token" value="([^"]+)"', browser.get("/login").text).group(1)
        form = {"csrf_token": token, "username": REVIEWER["name"], "password": REVIEWER["password"], "next": "/"}
        assert browser.post("/login", data=form).status_code == 303
        pages = [browser.get("/models/caravan") for _ in range(16)]
    assert [page.status_code for page in pages] == [200] * len(pages)
    access = [json.loads(line) for line in platform.service.log.read_text().splitlines() if '"/models/caravan"' in line]
    assert len({line["worker"] for line in access if line["status"] == 200}) == WORKERS


def test_graceful_shutdown_exits_cleanly_with_every_request_on_disk(platform):
    assert platform.service.stop() == 0
    for path in requests_dir(platform.harness.settings.home, "caravan").glob("*.jsonl"):
        text = path.read_text()
        assert text.endswith("\n")
        assert all(json.loads(line)["request_id"] for line in text.splitlines())


def test_served_records_drawn_like_the_training_population_pass_the_drift_check(completed_pipeline, tmp_path):
    """The passing side of served_feature_drift (its failing side is in the shadow test above): a random
    sample of the export, the population the champion was trained on, scored through the service."""
    with _serving(completed_pipeline, tmp_path / "home", max_records=1000, max_body_bytes=5_000_000) as served:
        with duckdb.connect(str(served.harness.settings.duckdb_path), read_only=True) as connection:
            sample = connection.execute(
                "select customer_id from caravan.raw_customers using sample reservoir(1000 rows) repeatable (7)"
            ).fetchdf()["customer_id"]
        answer = served.score(_raw_records(served, list(sample)))
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["results"]) == 1000
    run = served.harness.run("caravan_served_traffic")
    assert run.success
    (drift_check,) = run.get_asset_check_evaluations()
    assert drift_check.check_name == "served_feature_drift"
    assert drift_check.passed, drift_check.description
    assert drift_check.description.startswith("0 drifted feature(s) in 1000 served records")
    assert drift_check.metadata["served_records"].value == 1000


def test_serve_refuses_to_start_what_would_serve_nothing(tmp_path, monkeypatch, capsys):
    from mlops_assets.cli import main

    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    monkeypatch.setenv("MLOPS_SERVING_CONFIG", str(tmp_path / "serving.yaml"))
    monkeypatch.delenv("MLOPS_API_KEYS", raising=False)
    assert main(["serve", "--port", "1"]) == 2
    assert "no API keys or accounts configured" in capsys.readouterr().err
    monkeypatch.setenv("MLOPS_API_KEYS", f"crm:{hash_api_key(new_api_key())}:lookup")
    assert main(["serve", "--port", "1", "--workers", "0"]) == 2
    assert "--workers must be at least 1, not 0" in capsys.readouterr().err


def test_api_keys_are_stored_hashed_and_bad_configuration_is_refused(tmp_path):
    key = new_api_key()
    config = ServingConfig.load(None, {"MLOPS_API_KEYS": f"crm:{hash_api_key(key)}:lookup+score"})
    assert config.caller_for(key).name == "crm" and config.caller_for(key + "x") is None
    assert key not in config.model_dump_json()
    with pytest.raises(ValueError, match="MLOPS_API_KEYS entry 1"):
        ServingConfig.load(None, {"MLOPS_API_KEYS": "crm:lookup"})
    with pytest.raises(ValueError, match="sha256"):
        ServingConfig.load(None, {"MLOPS_API_KEYS": f"crm:{key}:lookup"})
    with pytest.raises(ValueError, match="scopes"):
        ServingConfig.load(None, {"MLOPS_API_KEYS": f"crm:{hash_api_key(key)}:admin"})


def test_swiss_bank_records_score_like_the_batch(tmp_path, monkeypatch):
    """Parquet exports with typed, categorical and boolean columns: the service's feature path and the
    batch path agree here too."""
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    use_case = get_use_case("swiss_bank")
    write_parquet(use_case.source_path, 1_500, seed=5)
    harness = make_harness(tmp_path, use_cases=(use_case,))
    # Only what the service needs (published scores and the exported model): no drift report,
    # performance monitoring or served-traffic assets.
    needed = dg.AssetSelection.assets(dg.AssetKey(["swiss_bank", "serving_models"])).upstream()
    job = harness.defs.resolve_job_def("swiss_bank_pipeline")
    asset_keys = list(needed.resolve(harness.defs.resolve_asset_graph()))
    assert job.execute_in_process(instance=harness.instance, asset_selection=asset_keys).success
    published_dir = harness.settings.published_dir
    manifest = read_manifest(published_dir, "swiss_bank")
    model = load_served_model(
        models_dir(published_dir, "swiss_bank"), manifest["champion"], signing_key(tmp_path, create=False)
    )
    export = pd.read_parquet(use_case.source_path).head(200)
    # What a JSON client sends: native numbers (full precision), booleans, text.
    records = json.loads(
        json.dumps(
            [{k: getattr(v, "item", lambda v=v: v)() for k, v in row.items()} for row in export.to_dict("records")]
        )
    )
    features = OnlineFeatures(use_case, compile_feature_sql(use_case)).rows(records, pd.Timestamp.now())
    with duckdb.connect(str(published_dir / "swiss_bank.duckdb"), read_only=True) as connection:
        batch = connection.execute("select customer_id, score from customer_scores").fetchdf().set_index("customer_id")
    scores = score_with(model, matrix_of_values(model.booster, model.artifact.features, features.column))
    ids = [str(customer_id) for customer_id in export["customer_id"]]  # the mart holds ids as text
    assert features.column("customer_id") == ids
    assert scores == pytest.approx(batch.loc[ids, "score"].to_numpy(), rel=1e-12)
    # The same customers in reverse order, values as the text of a CSV export ("true", "12.5", " 41 "),
    # and the target missing (a new customer's outcome is not known): the same scores.
    as_text = [
        {
            **{k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in record.items()},
            "age": f" {record['age']} ",
            "bought_product_a": None,
        }
        for record in records[::-1][:50]
    ]
    texts_built = OnlineFeatures(use_case, compile_feature_sql(use_case), connections=1).rows(
        as_text, pd.Timestamp.now()
    )
    assert texts_built.column("customer_id") == ids[::-1][:50]
    assert texts_built.column("bought_product_a") == [None] * 50
    text_scores = score_with(model, matrix_of_values(model.booster, model.artifact.features, texts_built.column))
    assert text_scores == pytest.approx(batch.loc[ids[::-1][:50], "score"].to_numpy(), rel=1e-12)
    with pytest.raises(RecordError, match=r"records\[0\]\.age"):
        OnlineFeatures(use_case, compile_feature_sql(use_case)).build(
            [{**records[0], "age": "old"}], pd.Timestamp.now()
        )


def test_request_log_fsyncs_in_the_background_and_on_close(tmp_path, monkeypatch):
    """Requests only append; the syncer thread fsyncs every interval (not the request's thread), and
    close() syncs what is left."""
    synced_by = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced_by.append(threading.current_thread().name), real_fsync(fd)))
    log = RequestLog(tmp_path, sync_interval=0.05)
    log.record("caravan", {"request_id": "a"})
    _wait_for(lambda: synced_by, timeout=5)
    assert set(synced_by) == {"request-log-sync"}  # never on the thread that recorded the request
    log.record("caravan", {"request_id": "b"})
    log.close()
    lines = [
        json.loads(line)
        for path in requests_dir(tmp_path, "caravan").glob("*.jsonl")
        for line in path.read_text().splitlines()
    ]
    assert [line["request_id"] for line in lines] == ["a", "b"]
    assert len(synced_by) >= 2 and not log._syncer.is_alive()


def test_frozen_objects_leave_the_collector_and_a_full_pass_frees_their_cycles():
    class Node:
        pass

    cycle = Node()
    cycle.itself = cycle
    alive = weakref.ref(cycle)
    try:
        keep_out_of_garbage_collection()
        assert gc.get_freeze_count() > 0
        del cycle
        gc.collect()
        assert alive() is not None  # frozen: a normal collection does not look at it
        keep_out_of_garbage_collection(full=True)
        assert alive() is None and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
