"""Registry, champion/challenger, approval, rollback, tamper protection and audit, through real runs."""

import json

import duckdb
import pytest
from conftest import copy_of_first_run, make_harness

from mlops_assets.cli import failure_lines
from mlops_assets.publishing import read_published
from mlops_assets.registry import audit_customer

WEAK_MODEL = {
    "ops": {"caravan__propensity_model": {"config": {"min_child_samples": 5000, "max_rounds": 1, "search_trials": 1}}}
}


def _warehouse(harness):
    return duckdb.connect(str(harness.settings.duckdb_path), read_only=True)


def _statuses(harness) -> dict[str, str]:
    with _warehouse(harness) as connection:
        rows = connection.execute(
            """select model_version, status from (
                   select *, row_number() over (partition by model_version order by event_seq desc) latest
                   from caravan.model_status_events) where latest = 1"""
        ).fetchall()
    return dict(rows)


def _published_version(harness) -> str:
    return read_published(harness.settings.published_dir / "caravan.duckdb", "select model_version from publication")[
        "model_version"
    ].item()


def _decision(harness, action, version, actor="Ada Risk", comment="reviewed"):
    job = "caravan_model_rollback" if action == "rollback" else "caravan_model_approval"
    config = {"action": action, "model_version": version, "actor": actor, "comment": comment}
    return harness.run(job, {"ops": {"caravan__champion_model": {"config": config}}}, raise_on_error=False)


@pytest.fixture(scope="module")
def auto_platform(modest_first_run, tmp_path_factory):
    """A modest first model became champion (conftest.MODEST_MODEL); the default model beats it and
    replaces it."""
    harness = copy_of_first_run(modest_first_run, tmp_path_factory.mktemp("lifecycle"))
    assert harness.run().success
    return harness


def test_first_model_is_champion_and_a_better_challenger_replaces_it(auto_platform):
    statuses = _statuses(auto_platform)
    assert sorted(statuses.values()) == ["champion", "retired"]
    champion = next(v for v, s in statuses.items() if s == "champion")
    assert _published_version(auto_platform) == champion
    with _warehouse(auto_platform) as connection:
        validation = connection.execute(
            "select decision, champion_version, reasons from caravan.model_validations where model_version = ?",
            [champion],
        ).fetchone()
    retired = next(v for v, s in statuses.items() if s == "retired")
    assert validation[0] == "promote" and validation[1] == retired
    assert "vs champion" in validation[2]


def test_a_challenger_identical_to_the_champion_is_not_promoted(auto_platform):
    champion = _published_version(auto_platform)
    assert auto_platform.run().success  # same data, same parameters: the same trees
    statuses = _statuses(auto_platform)
    assert statuses[champion] == "champion"
    with _warehouse(auto_platform) as connection:
        decision, reasons = connection.execute(
            "select decision, reasons from caravan.model_validations order by validated_at desc limit 1"
        ).fetchone()
    assert decision == "reject" and f"identical to the champion {champion}" in reasons


def test_worse_challenger_is_rejected_the_champion_stays_and_an_alert_is_raised(auto_platform):
    champion_before = _published_version(auto_platform)
    known = set(_statuses(auto_platform))
    result = auto_platform.run(run_config=WEAK_MODEL, raise_on_error=False)
    assert result.success  # a refused promotion is a decision, not a failure
    statuses = _statuses(auto_platform)
    (rejected,) = set(statuses) - known
    assert statuses[rejected] == "rejected" and statuses[champion_before] == "champion"
    assert _published_version(auto_platform) == champion_before
    with _warehouse(auto_platform) as connection:
        reason = connection.execute(
            "select reason from caravan.model_status_events where model_version = ? and status = 'rejected'",
            [rejected],
        ).fetchone()[0]
        alert = connection.execute(
            "select message from caravan.alerts where kind = 'promotion_refused' order by raised_at desc limit 1"
        ).fetchone()[0]
    assert "failed gate(s): quality_floor, not_worse_than_champion" in reason
    assert rejected in alert


def test_rollback_makes_a_former_champion_serve_again(auto_platform):
    statuses = _statuses(auto_platform)
    former = next(v for v, s in statuses.items() if s == "retired")
    current = next(v for v, s in statuses.items() if s == "champion")
    result = _decision(auto_platform, "rollback", former, actor="Ops Lead", comment="incident 42")
    assert result.success, failure_lines(result)
    assert _statuses(auto_platform)[former] == "champion" and _statuses(auto_platform)[current] == "retired"
    assert _published_version(auto_platform) == former
    refused = _decision(auto_platform, "rollback", "caravan-never-trained")
    assert not refused.success
    assert any("was never champion" in line for line in failure_lines(refused))


def test_tampered_artefact_is_refused_and_nothing_is_published(auto_platform):
    champion = _published_version(auto_platform)
    before = read_published(auto_platform.settings.published_dir / "caravan.duckdb", "select * from publication")
    with duckdb.connect(str(auto_platform.settings.duckdb_path)) as connection:
        connection.execute(
            "update caravan.model_registry set model_text = replace(model_text, 'shrinkage=', 'shrinkage=9') "
            "where model_version = ?",
            [champion],
        )
    result = _decision(auto_platform, "rollback", champion, comment="re-publish")
    assert not result.success
    messages = "\n".join(failure_lines(result))
    assert f"model {champion}: artefact checksum mismatch" in messages
    after = read_published(auto_platform.settings.published_dir / "caravan.duckdb", "select * from publication")
    assert after.equals(before)


def test_audit_returns_the_full_chain_for_a_customer(auto_platform):
    # Reasons are computed for the customers marketing contacts (the top decile), so audit one of them.
    published = auto_platform.settings.published_dir / "caravan.duckdb"
    contacted, not_contacted = read_published(
        published,
        "select min(customer_id) filter (where decile = 1) c, min(customer_id) filter (where decile = 10) n "
        "from customer_scores",
    ).iloc[0]
    with _warehouse(auto_platform) as connection:
        rows = audit_customer(connection, "caravan", contacted)
        unexplained = audit_customer(connection, "caravan", not_contacted)
    assert len(rows) >= 3  # one per publication
    assert unexplained.iloc[-1]["reasons"] is None and unexplained.iloc[-1]["model_version"]
    latest = rows.iloc[-1]
    assert latest["model_version"] and len(latest["training_set_fingerprint"]) == 64
    assert latest["model_sha256"] and latest["training_rows"] is not None
    assert latest["validation_decision"] == "promote"
    assert latest["approved_by"] and latest["trigger"] == "manual"
    reasons = json.loads(latest["reasons"])
    # up to 3 reasons: the features that raised the score most (a small model may use fewer)
    assert 1 <= len(reasons) <= 3 and all(r["label"] and r["contribution"] > 0 for r in reasons)
    assert audit_customer(
        duckdb.connect(str(auto_platform.settings.duckdb_path), read_only=True),
        "caravan",
        contacted,
        "1999-01-01",
    ).empty


def test_manual_mode_waits_for_approval_then_the_approval_job_promotes(caravan, tmp_path):
    manual = caravan.model_copy(update={"promotion": caravan.promotion.model_copy(update={"approval": "manual"})})
    harness = make_harness(tmp_path, use_cases=(manual,))
    assert harness.run().success
    ((version, status),) = _statuses(harness).items()
    assert status == "pending_approval"
    assert not (harness.settings.published_dir / "caravan.duckdb").exists()  # nothing scored without a champion
    with _warehouse(harness) as connection:
        assert (
            connection.execute("select count(*) from caravan.alerts where kind = 'approval_pending'").fetchone()[0] == 1
        )

    unnamed = _decision(harness, "approve", version, actor="")
    assert not unnamed.success and any("approver's name" in line for line in failure_lines(unnamed))
    approved = _decision(harness, "approve", version, actor="Maria Approver", comment="checked lift and fairness")
    assert approved.success, failure_lines(approved)
    assert _statuses(harness)[version] == "champion"
    assert _published_version(harness) == version
    with _warehouse(harness) as connection:
        actor, reason = connection.execute(
            "select actor, reason from caravan.model_status_events where status = 'champion'"
        ).fetchone()
    assert actor == "Maria Approver" and reason == "approved: checked lift and fairness"


def test_fairness_failure_rejects_the_model(caravan, tmp_path):
    strict = caravan.fairness.model_copy(update={"min_selection_rate_ratio": 0.95, "require_significance": False})
    harness = make_harness(tmp_path, use_cases=(caravan.model_copy(update={"fairness": strict}),))
    assert harness.run().success
    ((version, status),) = _statuses(harness).items()
    assert status == "rejected"
    with _warehouse(harness) as connection:
        reason = connection.execute(
            "select reason from caravan.model_status_events where status = 'rejected'"
        ).fetchone()[0]
    assert "failed gate(s): fairness" in reason and "selection-rate ratio" in reason and "avg_age_class=" in reason
    assert not (harness.settings.published_dir / "caravan.duckdb").exists()
