"""The review pages at `/`, in real headless Chromium (Debian's, driven by Playwright), over a real service.

One platform serves the module: a copy of the session's completed caravan pipeline with manual
approval, two models pending approval (one trained by carol, one by dave: the runs carry the
launcher tag `mlops` sets), and `mlops serve` with two accounts. Tests run in file order: refusals
over plain HTTP (wrong password, missing CSRF token, the four-eyes rule on the job path), then the
browser: anonymous redirect, carol refused as approver of her own model, ada approves it (scores are
re-published with it), ada rejects the other, and an audit lookup that renders and exports.
Screenshots go to the module's temporary folder (printed) and were looked at.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import duckdb
import httpx
import pytest
from conftest import copy_of_first_run
from playwright.sync_api import sync_playwright

from mlops_assets.defs.jobs import LAUNCHED_BY_TAG, launcher_of, trigger_of
from mlops_assets.lifecycle import four_eyes_refusal
from mlops_assets.ml.fairness_summary import fairness_summary, fairness_verdict
from mlops_assets.serving.config import ServingConfig, hash_api_key, hash_password, new_api_key, verify_password
from mlops_assets.serving.process import ServiceProcess
from mlops_assets.use_cases import get_use_case

CHROMIUM = "/usr/bin/chromium"
PASSWORDS = {"ada": "ada-reviews-models-2026", "carol": "carol-trains-models-2026"}
DECISION_TIMEOUT_MS = 600_000


def _manual_caravan():
    caravan = get_use_case("caravan")
    promotion = caravan.promotion.model_copy(update={"approval": "manual", "tolerance": 1.0})
    return caravan.model_copy(update={"promotion": promotion})


@dataclass
class ReviewPlatform:
    harness: object
    service: ServiceProcess
    shots: Path
    carols_model: str
    daves_model: str
    first_champion: str

    @property
    def url(self) -> str:
        return self.service.url

    def status_events(self, version: str) -> list[tuple]:
        with duckdb.connect(str(self.harness.settings.duckdb_path), read_only=True) as connection:
            return connection.execute(
                "select status, actor, reason from caravan.model_status_events where model_version = ? "
                "order by event_seq",
                [version],
            ).fetchall()

    def published_versions(self) -> set[str]:
        path = self.harness.settings.published_dir / "caravan.duckdb"
        with duckdb.connect(str(path), read_only=True) as connection:
            return {
                row[0] for row in connection.execute("select distinct model_version from customer_scores").fetchall()
            }


def _pending_model(harness, params: dict, launcher: str) -> str:
    config = {"ops": {"caravan__propensity_model": {"config": params}}}
    assert harness.run("caravan_retrain", config, tags={LAUNCHED_BY_TAG: launcher}).success
    with duckdb.connect(str(harness.settings.duckdb_path), read_only=True) as connection:
        (version,) = connection.execute(
            "select model_version from caravan.model_registry order by registered_at desc limit 1"
        ).fetchone()
        lineage = json.loads(
            connection.execute(
                "select lineage from caravan.model_registry where model_version = ?", [version]
            ).fetchone()[0]
        )
        (status,) = connection.execute(
            "select status from caravan.model_status_events where model_version = ? order by event_seq desc limit 1",
            [version],
        ).fetchone()
    assert status == "pending_approval", (version, status)
    assert lineage["launched_by"] == launcher
    assert lineage["trigger"] == "manual"
    return version


@pytest.fixture(scope="module")
def review(completed_pipeline, tmp_path_factory):
    home = tmp_path_factory.mktemp("review") / "home"
    harness = copy_of_first_run(completed_pipeline, home, (_manual_caravan(),))
    with duckdb.connect(str(harness.settings.duckdb_path), read_only=True) as connection:
        first_champion = connection.execute("select distinct model_version from caravan.score_history").fetchone()[0]
    carols = _pending_model(harness, {"num_leaves": 15, "max_rounds": 300}, "carol")
    daves = _pending_model(harness, {"num_leaves": 31, "min_child_samples": 40, "max_rounds": 200}, "dave")
    config = home / "serving.yaml"
    config.write_text(
        json.dumps(
            {
                "api_keys": [{"name": "crm", "sha256": hash_api_key(new_api_key()), "scopes": ["lookup"]}],
                "accounts": [
                    {
                        "name": "ada",
                        "password_scrypt": hash_password(PASSWORDS["ada"]),
                        "roles": ["reviewer", "auditor"],
                    },
                    {"name": "carol", "password_scrypt": hash_password(PASSWORDS["carol"]), "roles": ["reviewer"]},
                ],
                "watch_interval_seconds": 0.1,
            }
        )
    )
    dagster_home = home / "dagster_home"
    dagster_home.mkdir()
    service = ServiceProcess(  # two workers, as `make serve` runs it: a page may come from either
        home,
        config,
        home / "service.log",
        environment={"DAGSTER_HOME": str(dagster_home), "MLOPS_USER": "nobody"},
        workers=2,
    )
    shots = tmp_path_factory.mktemp("screenshots")
    print(f"screenshots: {shots}")
    try:
        service.wait_until_ready()
        yield ReviewPlatform(harness, service, shots, carols, daves, first_champion)
    finally:
        service.stop()


@pytest.fixture(scope="module")
def browser(review):
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield chromium
        finally:
            chromium.close()


def _logged_in(browser, review, name: str):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(review.url + "/login")
    page.fill("#username", name)
    page.fill("#password", PASSWORDS[name])
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert "/login" not in page.url, page.url
    return page


def _token(client: httpx.Client, path: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).text).group(1)


def test_passwords_are_stored_as_scrypt_hashes_and_checked():
    stored = hash_password("a long enough secret")
    assert stored.startswith("scrypt$") and "a long enough secret" not in stored
    assert verify_password("a long enough secret", stored) and not verify_password("a long enough secreT", stored)
    assert hash_password("a long enough secret") != stored  # salted
    with pytest.raises(ValueError, match="password_scrypt"):
        ServingConfig.model_validate({"accounts": [{"name": "x", "password_scrypt": "plain", "roles": ["auditor"]}]})


def test_four_eyes_rule_compares_approver_and_acting_user_with_the_launcher():
    assert four_eyes_refusal("carol", "Carol ") is not None
    assert "person launching the approval" in four_eyes_refusal("carol", "ada", acting_user="carol")
    assert four_eyes_refusal("carol", "ada", acting_user="bob") is None
    assert four_eyes_refusal(None, "carol", acting_user="carol") is None  # a sensor or schedule trained it


def test_the_launcher_of_a_run_comes_from_mlops_or_the_dagster_ui_user():
    assert launcher_of({LAUNCHED_BY_TAG: "carol", "dagster/user": "carol@bank"}) == "carol"
    assert launcher_of({"dagster/user": "carol@bank"}) == "carol@bank"
    assert launcher_of({"dagster/sensor_name": "caravan_drift_retrain"}) is None
    assert trigger_of({LAUNCHED_BY_TAG: "dave"})["launched_by"] == "dave"


def test_cli_audit_names_the_gated_fairness_ratio_and_its_bound():
    bounds = {"min_tpr_ratio": 0.8, "min_selection_rate_ratio": None}
    record = {"attribute": "avg_age_class", "bounds": bounds, "demographic_parity_ratio": 0.44}
    passed = fairness_summary({**record, "passed": True, "equal_opportunity_ratio": float("nan")})
    assert passed == (
        "not evaluated (no gated ratio could be computed) on avg_age_class: true-positive-rate ratio n/a "
        "(gated, bound 0.8: not evaluated, too few groups qualify); selection-rate ratio 0.44 (reported, not gated)"
    )
    evaluated = fairness_summary({**record, "passed": True, "equal_opportunity_ratio": 0.93})
    assert evaluated.startswith("passed on avg_age_class: true-positive-rate ratio 0.93 (gated, bound 0.8)")
    ungated = {**record, "bounds": {"min_tpr_ratio": None, "min_selection_rate_ratio": None}, "passed": True}
    assert fairness_verdict({**ungated, "equal_opportunity_ratio": 0.93}) == "reported only (no ratio is gated)"
    assert fairness_verdict({**record, "passed": True, "equal_opportunity_ratio": float("nan")}).startswith("not eval")
    failed = fairness_summary({**record, "passed": False, "equal_opportunity_ratio": 0.61})
    assert failed.startswith("FAILED") and "ratio 0.61 (gated, bound 0.8)" in failed
    assert fairness_summary({}) == "no fairness gate"


def test_wrong_password_and_posts_without_csrf_token_are_refused(review):
    with httpx.Client(base_url=review.url, timeout=30) as client:
        wrong = client.post(
            "/login", data={"username": "ada", "password": "guess", "csrf_token": _token(client, "/login")}
        )
        assert wrong.status_code == 401 and "wrong password" in wrong.text
        assert client.get("/models/caravan").status_code == 303
        no_token = client.post("/login", data={"username": "ada", "password": PASSWORDS["ada"]})
        assert no_token.status_code == 403
        forged = client.post("/login", data={"username": "ada", "password": PASSWORDS["ada"], "csrf_token": "forged"})
        assert forged.status_code == 403
        assert client.get("/models/caravan").status_code == 303  # still anonymous
        token = _token(client, "/login")
        login = {"username": "ada", "password": PASSWORDS["ada"], "csrf_token": token, "next": "//evil.example/"}
        ok = client.post("/login", data=login)
        assert ok.status_code == 303 and ok.headers["location"] == "/"  # no redirect off the site
        assert client.get("/models/caravan").status_code == 200
        # While a run holds the warehouse read-write, pages wait briefly, then say so (503), never hang.
        with duckdb.connect(str(review.harness.settings.duckdb_path)):
            busy = client.get("/models/caravan")
        assert busy.status_code == 503 and "busy" in busy.text
        assert client.get("/models/caravan").status_code == 200
        decision = f"/models/caravan/{review.daves_model}/decision"
        refused = client.post(decision, data={"action": "reject", "comment": "no token"})
        assert refused.status_code == 403
    assert review.status_events(review.daves_model)[-1][0] == "pending_approval"


def test_job_path_refuses_the_trainer_as_approver_or_as_launcher(review):
    def approval(actor: str, launcher: str):
        config = {"action": "approve", "model_version": review.carols_model, "actor": actor, "comment": "mine"}
        return review.harness.run(
            "caravan_model_approval",
            {"ops": {"caravan__champion_model": {"config": config}}},
            raise_on_error=False,
            tags={LAUNCHED_BY_TAG: launcher},
        )

    for actor, launcher in (("carol", "ops"), ("bob", "carol")):
        result = approval(actor, launcher)
        assert not result.success
        failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
        assert "four-eyes rule" in failure.event_specific_data.error.message
    assert review.status_events(review.carols_model)[-1][0] == "pending_approval"


def test_anonymous_visitor_is_sent_to_login(review, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(review.url + f"/models/caravan/{review.carols_model}")
    assert page.url.startswith(review.url + "/login?next=")
    assert page.locator("h1").inner_text() == "Log in"
    page.screenshot(path=review.shots / "01-login.png")
    page.fill("#username", "ada")
    page.fill("#password", PASSWORDS["ada"])
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert page.url == review.url + f"/models/caravan/{review.carols_model}"  # back where the visitor was going
    page.close()


def test_trainer_is_refused_as_approver_in_the_browser(review, browser):
    page = _logged_in(browser, review, "carol")
    page.goto(review.url + f"/models/caravan/{review.carols_model}")
    assert "You started the training run" in page.inner_text("#review")
    page.fill("#comment", "looks good to me")
    with page.expect_navigation():
        page.click("button.approve")
    flash = page.inner_text(".flash")
    assert "four-eyes rule" in flash and "carol" in flash
    page.screenshot(path=review.shots / "02-trainer-refused.png", full_page=False)
    assert review.status_events(review.carols_model)[-1][0] == "pending_approval"
    # No comment, no decision.
    page.goto(review.url + f"/models/caravan/{review.daves_model}")
    page.eval_on_selector("#comment", "e => e.removeAttribute('required')")
    with page.expect_navigation():
        page.click("button.reject")
    assert "comment" in page.inner_text(".flash")
    assert review.status_events(review.daves_model)[-1][0] == "pending_approval"
    page.close()


def test_reviewer_approves_the_pending_model_and_the_published_scores_change(review, browser):
    assert review.published_versions() == {review.first_champion}
    page = _logged_in(browser, review, "ada")
    page.goto(review.url + "/models/caravan")
    table = page.inner_text("table")
    assert review.carols_model in table and review.daves_model in table and "pending approval" in table
    page.screenshot(path=review.shots / "03-models.png", full_page=True)
    page.click(f"a:text('{review.carols_model}')")
    comparison = page.inner_text("#comparison")
    assert review.first_champion in comparison and "roc auc" in comparison
    assert "(gated, bound 0.8" in page.inner_text("#fairness")  # which ratio is gated, and its bound
    assert f"Model card: {review.carols_model}" in page.inner_text("#model-card")
    page.screenshot(path=review.shots / "04-pending-model.png", full_page=True)
    with page.expect_navigation():
        page.click("#compare")  # the champion it was validated against is preselected
    assert "/compare/caravan?" in page.url
    same = page.inner_text("#same-customers")
    assert review.first_champion in same and "top decile lift (decides)" in same
    assert "num_leaves" in page.inner_text("#params")  # 15 against the use case's 7
    # Each version's decile lift and reliability chart side by side, with its fairness verdict.
    assert page.locator("#charts svg.chart").count() == 4 and page.inner_text("#charts").count("Fairness:") == 2
    assert page.locator("#charts svg.chart rect[height]").count() >= 20  # ten decile bars per version
    assert page.locator("table.fairness-groups").count() == 2 and "3 (40-50 years)" in page.inner_text("#charts")
    page.screenshot(path=review.shots / "04b-compare.png", full_page=True)
    page.goto(review.url + f"/compare/caravan?a={review.daves_model}&b={review.carols_model}")
    assert "never evaluated against each other" in page.inner_text("#same-customers")
    page.goto(review.url + f"/models/caravan/{review.carols_model}")
    page.fill("#comment", "Better lift on the same customers; shadow scores looked fine.")
    with page.expect_navigation(timeout=DECISION_TIMEOUT_MS):
        page.click("button.approve", timeout=DECISION_TIMEOUT_MS, no_wait_after=True)
    flash = page.inner_text(".flash")
    assert flash.startswith(f"{review.carols_model} approved by ada"), flash
    page.screenshot(path=review.shots / "05-approved.png")
    assert review.published_versions() == {review.carols_model}
    status, actor, reason = review.status_events(review.carols_model)[-1]
    assert (status, actor) == ("champion", "ada") and "shadow scores looked fine" in reason
    assert review.status_events(review.first_champion)[-1][:2] == ("retired", "ada")
    page.close()


def test_reviewer_rejects_the_other_pending_model(review, browser):
    page = _logged_in(browser, review, "ada")
    page.goto(review.url + f"/models/caravan/{review.daves_model}")
    page.fill("#comment", "Fewer leaves lose calibration in the top decile.")
    with page.expect_navigation(timeout=DECISION_TIMEOUT_MS):
        page.click("button.reject", timeout=DECISION_TIMEOUT_MS, no_wait_after=True)
    assert page.inner_text(".flash").startswith(f"{review.daves_model} rejected by ada")
    assert page.locator("#review").count() == 0  # no longer pending: no buttons
    assert review.status_events(review.daves_model)[-1][:2] == ("rejected", "ada")
    assert review.published_versions() == {review.carols_model}
    page.close()


def test_audit_lookup_renders_every_published_score_and_exports_a_report(review, browser, tmp_path):
    with duckdb.connect(str(review.harness.settings.duckdb_path), read_only=True) as connection:
        customer = connection.execute(
            "select customer_id from caravan.score_history where model_version = ? order by rank limit 1",
            [review.carols_model],
        ).fetchone()[0]
        published = connection.execute(
            "select count(*) from caravan.score_history where customer_id = ?", [customer]
        ).fetchone()[0]
    assert published >= 2
    page = _logged_in(browser, review, "ada")
    page.goto(review.url + "/audit/caravan")
    page.fill("#customer", customer)
    with page.expect_navigation():
        page.click("#lookup")
    entries = page.locator(".audit-entry")
    assert entries.count() == published
    text = page.inner_text("main")
    assert review.first_champion in text and review.carols_model in text and "ada" in text
    page.screenshot(path=review.shots / "06-audit.png", full_page=True)
    with page.expect_download() as download:
        page.click("#report")
    report = tmp_path / download.value.suggested_filename
    download.value.save_as(report)
    assert report.name.startswith(f"audit-caravan-{customer}-") and report.suffix == ".html"
    html = report.read_text()
    assert html.count('class="card audit-entry"') == published and "Generated" in html and "by ada" in html
    page.goto(report.as_uri())
    page.screenshot(path=review.shots / "07-audit-report.png", full_page=True)
    page.goto(review.url + "/audit/caravan?customer=no%20such")
    assert "A customer id is" in page.inner_text(".flash")
    page.close()
    # carol has no auditor role.
    carol = _logged_in(browser, review, "carol")
    carol.goto(review.url + f"/audit/caravan?customer={customer}")
    assert "no auditor role" in carol.inner_text("main")
    carol.close()
