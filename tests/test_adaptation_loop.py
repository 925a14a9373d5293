"""Real change is learned, broken data is blocked: the loop on the synthetic Swiss bank, through
Dagster's real sensor evaluation (incoming-files sensor -> batch job -> retraining sensor -> retrain).

The bank's regime change moves its macro indicators together for every customer and changes who buys;
its seasonal batches move only the calendar features. Batches are small (1,500 customers) to keep the
suite fast; benchmarks/adaptation.py replays the same over many batches and seeds.
"""

from __future__ import annotations

import json

import duckdb
import pandas as pd
import pytest
from conftest import PipelineHarness, copy_of_first_run, keep_pristine_copy, make_harness

from mlops_assets.cli import failure_lines
from mlops_assets.ml.evaluation import classification_metrics
from mlops_assets.publishing import read_published
from mlops_assets.registry import current_champion, load_artifact
from mlops_assets.replay import write_replay_files
from mlops_assets.synthetic.swiss_bank import write_parquet
from mlops_assets.use_cases import get_use_case

NAME = "swiss_bank"
INCOMING, RETRAIN = f"{NAME}_incoming_files", f"{NAME}_retrain_on_failed_checks"
BATCH_SIZE = 1500


def swiss_bank(**monitoring):
    """The use case, without the retrain cool-down (batches follow each other within seconds here)."""
    use_case = get_use_case(NAME)
    settings = use_case.monitoring.model_copy(update={"retrain_cooldown_minutes": 0, **monitoring})
    return use_case.model_copy(update={"monitoring": settings})


def _first_year(home, customers: int = 6000, **monitoring) -> PipelineHarness:
    """The bank's first run (MLOPS_HOME set to `home`): a champion trained on a year of the old economy."""
    use_case = swiss_bank(**monitoring)
    write_parquet(use_case.source_path, customers, seed=11)  # under MLOPS_HOME
    harness = make_harness(home, use_cases=(use_case,))
    first = harness.run(f"{NAME}_pipeline", raise_on_error=False)
    assert first.success, failure_lines(first)
    return harness


@pytest.fixture(scope="module")
def first_year(tmp_path_factory) -> PipelineHarness:
    """The first run with the default (admit) drift policy, shared by the tests that use that policy:
    each starts from a copy of its files (export, warehouse, published scores) and a fresh instance."""
    home = tmp_path_factory.mktemp("bank")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLOPS_HOME", str(home))
        return keep_pristine_copy(_first_year(home), tmp_path_factory)


class BankLoop:
    """A swiss_bank platform with a champion trained on a year of the old economy, and its sensors:
    a copy of `first_year`, or (another drift policy) its own first run with `monitoring`."""

    def __init__(self, home, monkeypatch, first_year: PipelineHarness | None = None, **monitoring):
        monkeypatch.setenv("MLOPS_HOME", str(home))
        self.use_case = swiss_bank(**monitoring)
        if first_year is None:
            self.harness = _first_year(home, **monitoring)
        else:
            self.harness = copy_of_first_run(first_year, home, (self.use_case,))
        self.stale_champion = self.champion()
        self.incoming_cursor = None
        requests, self.retrain_cursor, _ = self.harness.tick(RETRAIN, None)
        assert requests == []

    def deliver(self, scenario: str, batch: int, **options):
        write_replay_files(
            self.use_case.source_path,
            self.harness.settings.incoming_dir / NAME,
            scenario,
            batch_number=batch,
            size=BATCH_SIZE,
            seed=5,
            generator=NAME,
            **options,
        )
        return self.run_incoming()

    def run_incoming(self):
        requests, self.incoming_cursor, _ = self.harness.tick(INCOMING, self.incoming_cursor)
        assert len(requests) == 1 and requests[0].job_name == f"{NAME}_batch"
        return self.harness.launch(requests[0], f"{NAME}_batch")

    def retrain_requests(self):
        requests, self.retrain_cursor, skip = self.harness.tick(RETRAIN, self.retrain_cursor)
        return requests, skip

    def connect(self):
        return duckdb.connect(str(self.harness.settings.duckdb_path), read_only=True)

    def champion(self) -> str:
        with self.connect() as connection:
            return current_champion(connection, NAME)

    def published(self) -> dict:
        return (
            read_published(
                self.harness.settings.published_dir / f"{NAME}.duckdb",
                "select (select model_version from publication) as version, count(*) as rows, "
                "sum(hash(customer_id, score)) as content from customer_scores",
            )
            .iloc[0]
            .to_dict()
        )

    def history_loads(self) -> int:
        with self.connect() as connection:
            return connection.execute(f"select count(distinct load_id) from {NAME}.int_customer_history").fetchone()[0]

    def realized_roc_auc(self, model_version: str) -> float:
        """ROC AUC of a model on the latest batch's customers with outcomes."""
        with self.connect() as connection:
            artifact = load_artifact(connection, NAME, model_version)
            batch = connection.execute(
                f"""select * from {NAME}.customer_features
                    where load_id = (select load_id from {NAME}.customer_features order by loaded_at desc limit 1)
                      and bought_product_a is not null"""
            ).fetchdf()
        return classification_metrics(batch["bought_product_a"].to_numpy(), artifact.predict(batch))["roc_auc"]


def _check(result, name: str):
    [evaluation] = [
        e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION" and e.asset_check_evaluation_data.check_name == name
    ]
    return evaluation


def test_regime_change_is_admitted_classified_and_learned(first_year, tmp_path, monkeypatch):
    loop = BankLoop(tmp_path, monkeypatch, first_year)
    result = loop.deliver("regime_change", 1, strength=1.0)
    assert result.success, failure_lines(result)  # admitted: the batch reaches the history
    assert loop.history_loads() == 2
    drift = _check(result, "feature_drift")
    assert not drift.passed and drift.severity.value == "ERROR"
    assert drift.metadata["primary_cause"].value == "co_moving_group"
    with loop.connect() as connection:
        causes = dict(
            connection.execute(
                f"select feature, cause from {NAME}.drift_history where run_kind = 'batch' and cause <> ''"
            ).fetchall()
        )
    assert {causes[f] for f in ("interest_rate", "unemployment_rate", "consumer_confidence")} == {"co_moving_group"}

    requests, _ = loop.retrain_requests()
    assert len(requests) == 1  # one retrain for the batch, whatever number of checks failed
    assert loop.retrain_requests()[0] == []
    retrain = loop.harness.launch(requests[0], f"{NAME}_retrain")
    assert retrain.success, failure_lines(retrain)
    # The retrain's own drift evaluations are labelled as such and never request another retrain.
    own = _check(retrain, "feature_drift")
    assert own.severity.value == "WARN" and own.description.startswith("retraining run")
    assert loop.retrain_requests()[0] == []
    retrained = loop.champion()
    assert retrained != loop.stale_champion
    with loop.connect() as connection:
        lineage = json.loads(
            connection.execute(
                f"select lineage from {NAME}.model_registry where model_version = ?", [retrained]
            ).fetchone()[0]
        )
    assert len(lineage["load_ids"]) == 2  # trained on a window holding the new batch

    # The next batches of the new regime: the retrained champion scores them, and ranks far better.
    for batch in (2, 3):
        result = loop.deliver("regime_change", batch, strength=1.0)
        assert result.success, failure_lines(result)
        assert loop.published()["version"] == loop.champion()
        stale, in_use = loop.realized_roc_auc(loop.stale_champion), loop.realized_roc_auc(loop.champion())
        assert in_use > stale + 0.05, (batch, stale, in_use)
        requests, _ = loop.retrain_requests()
        assert len(requests) <= 1
        for request in requests:
            assert loop.harness.launch(request, f"{NAME}_retrain").success


def test_stationary_and_seasonal_batches_request_no_retrain_and_broken_data_is_blocked(
    first_year, tmp_path, monkeypatch
):
    loop = BankLoop(tmp_path, monkeypatch, first_year)
    for batch, scenario in ((1, "stationary"), (2, "seasonal"), (6, "seasonal")):
        result = loop.deliver(scenario, batch)
        assert result.success, failure_lines(result)
        drift = _check(result, "feature_drift")
        assert drift.passed, drift.description
        requests, skip = loop.retrain_requests()
        assert requests == [], skip
    assert "contact_month" in drift.metadata["seasonal_drift"].value  # reported, expected, no retrain
    assert loop.history_loads() == 4

    before, loads_before = loop.published(), loop.history_loads()
    # Broken data: a column gone empty (rejected at ingestion), a unit change x10 (blocked at staging),
    # and a wrong file (another use case's export).
    for batch, bug in ((7, "empty_column"), (8, "unit_change")):
        result = loop.deliver("data_bug", batch, bug=bug)
        assert not result.success
        message = "\n".join(failure_lines(result))
        assert f"customers_000{batch}.parquet" in message and "balance_chf" in message, message
    assert not _check(result, "unit_change").passed
    assert "x10" in _check(result, "unit_change").description
    wrong = loop.harness.settings.incoming_dir / NAME / "customers_0009.csv"
    pd.read_csv(get_use_case("caravan").source_path).head(200).to_csv(wrong, index=False)
    result = loop.run_incoming()
    assert not result.success and "customers_0009.csv" in "\n".join(failure_lines(result))

    assert loop.published() == before  # nothing lost: the last good scores stay published
    assert loop.history_loads() == loads_before  # nothing of the broken batches reached the history
    assert loop.champion() == loop.stale_champion
    requests, skip = loop.retrain_requests()
    assert requests == [], skip  # broken data never requests a retrain


def test_review_policy_holds_a_drifting_batch_until_a_person_decides(tmp_path, monkeypatch):
    from mlops_assets.cli import main as mlops

    loop = BankLoop(tmp_path, monkeypatch, drift_policy="review")
    before = loop.published()
    held = loop.deliver("regime_change", 1, strength=1.0)
    assert not held.success and not _check(held, "drift_policy").passed
    with loop.connect() as connection:
        load_id, status = connection.execute(
            f"select load_id, status from {NAME}.raw_customer_loads order by loaded_at desc limit 1"
        ).fetchone()
        alert = connection.execute(f"select message from {NAME}.alerts where kind = 'batch_held'").fetchone()[0]
    assert status == "held" and "held for review" in alert and load_id in alert
    assert loop.history_loads() == 1 and loop.published() == before  # not in history; old scores stay
    assert loop.retrain_requests()[0] == []

    # Accepted in the UI's job: recorded with who and why, then loaded and admitted.
    review = {"action": "accept", "load_id": load_id, "by": "Dana Engineer", "why": "rates really rose"}
    accepted = loop.harness.run(
        f"{NAME}_batch_review", {"ops": {f"{NAME}__review_held_batch": {"config": review}}}, raise_on_error=False
    )
    assert accepted.success, failure_lines(accepted)
    admitted = loop.run_incoming()
    assert admitted.success, failure_lines(admitted)
    assert "accepted on review" in _check(admitted, "drift_policy").description
    assert loop.history_loads() == 2

    # The next drifting batch is held too, and rejected with the command line: discarded, recorded.
    assert not loop.deliver("regime_change", 2, strength=1.0).success
    with loop.connect() as connection:
        second = connection.execute(f"select load_id from {NAME}.raw_customer_loads where status = 'held'").fetchone()[
            0
        ]
    args = ["review", "reject", "--use-case", NAME, "--load", second, "--by", "Dana Engineer", "--why", "test file"]
    assert mlops(args) == 0
    assert mlops(args) == 1  # not held any more: nothing to decide
    with loop.connect() as connection:
        decisions = connection.execute(
            f"select load_id, decision, decided_by, reason from {NAME}.batch_reviews order by decided_at"
        ).fetchall()
        status = connection.execute(
            f"select status from {NAME}.raw_customer_loads where load_id = ?", [second]
        ).fetchone()[0]
    assert [d[1] for d in decisions] == ["held", "accepted", "held", "rejected"]
    assert decisions[-1][2:] == ("Dana Engineer", "test file") and status == "review_rejected"
    assert loop.history_loads() == 2
