"""The monitoring and retraining loop end to end, through Dagster's real sensor evaluation.

Batches are written by the replay tool into the incoming folder, picked up by the incoming-files
sensor, and run; the retraining sensor reads the instance's check evaluations and requests runs.
"""

import json

import duckdb
from conftest import copy_of_first_run

from mlops_assets.cli import failure_lines
from mlops_assets.publishing import read_published
from mlops_assets.replay import write_replay_files

INCOMING, RETRAIN = "caravan_incoming_files", "caravan_retrain_on_failed_checks"


def _warehouse(harness):
    return duckdb.connect(str(harness.settings.duckdb_path), read_only=True)


def _check(result, name: str):
    evaluations = [
        e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION" and e.asset_check_evaluation_data.check_name == name
    ]
    assert len(evaluations) == 1, name
    return evaluations[0]


def _publication(harness) -> dict:
    frame = read_published(
        harness.settings.published_dir / "caravan.duckdb",
        "select (select model_version from publication) as version, count(*) as rows, "
        "sum(hash(customer_id, score)) as content from customer_scores",
    )
    return frame.iloc[0].to_dict()


def _statuses(harness) -> dict[str, str]:
    with _warehouse(harness) as connection:
        return dict(
            connection.execute(
                """select model_version, status from caravan.model_status_events
                   qualify row_number() over (partition by model_version order by event_seq desc) = 1"""
            ).fetchall()
        )


class Loop:
    """A platform with a champion (a copy of the session's first run), and the two sensors' cursors."""

    def __init__(self, home, completed_pipeline):
        self.harness = copy_of_first_run(completed_pipeline, home)
        self.incoming_cursor = None
        requests, self.retrain_cursor, _ = self.harness.tick(RETRAIN, None)  # starts watching
        assert requests == []

    def deliver(self, scenario: str, batch: int, **options):
        """Replay a batch into the incoming folder and run what the incoming-files sensor requests."""
        write_replay_files(
            _source(),
            self.harness.settings.incoming_dir / "caravan",
            scenario,
            batch_number=batch,
            **options,
        )
        requests, self.incoming_cursor, _ = self.harness.tick(INCOMING, self.incoming_cursor)
        assert len(requests) == 1 and requests[0].job_name == "caravan_batch"
        return self.harness.launch(requests[0], "caravan_batch")

    def retrain_requests(self):
        requests, self.retrain_cursor, skip = self.harness.tick(RETRAIN, self.retrain_cursor)
        return requests, skip


def _source():
    from mlops_assets.use_cases import get_use_case

    return get_use_case("caravan").source_path


def test_stationary_batches_request_no_retraining_and_data_bugs_are_stopped(tmp_path, completed_pipeline):
    loop = Loop(tmp_path, completed_pipeline)
    for batch in (1, 2, 3):
        result = loop.deliver("stationary", batch, seed=batch)
        assert result.success, failure_lines(result)
        assert _check(result, "feature_drift").passed and _check(result, "score_drift").passed
        requests, skip = loop.retrain_requests()
        assert requests == [] and "no new failed checks" in skip
    assert _publication(loop.harness)["rows"] == 2000

    # data_bug: a column goes empty, or changes its unit (x10). The quality gate stops the load.
    for batch, bug, column in ((4, "empty_column", "MGEMLEEF"), (5, "unit_change", "PPERSAUT")):
        before, statuses_before = _publication(loop.harness), _statuses(loop.harness)
        result = loop.deliver("data_bug", batch, bug=bug)
        assert not result.success
        message = "\n".join(failure_lines(result))
        assert f"customers_000{batch}.csv" in message and f"column {column}" in message
        assert _publication(loop.harness) == before  # the published scores are unchanged
        assert _statuses(loop.harness) == statuses_before  # nothing trained, nothing promoted
        with _warehouse(loop.harness) as connection:
            alert = connection.execute(
                "select message from caravan.alerts where kind = 'data_quality' order by raised_at desc limit 1"
            ).fetchone()[0]
        assert "load rejected" in alert and f"customers_000{batch}.csv" in alert and column in alert
        # A rejected load changed nothing, so there is nothing to retrain on.
        assert again_no_request(loop)


def test_persona_shift_triggers_exactly_one_retrain_that_is_promoted(tmp_path, completed_pipeline):
    loop = Loop(tmp_path, completed_pipeline)
    champion = _publication(loop.harness)["version"]
    result = loop.deliver("persona_shift", 1, strength=0.8)
    assert result.success, failure_lines(result)  # drift does not fail the batch: it is still scored
    drift = _check(result, "feature_drift")
    assert not drift.passed and "avg_age_class" in drift.description
    assert _publication(loop.harness)["version"] == champion  # scored by the stale champion meanwhile

    requests, _ = loop.retrain_requests()
    assert len(requests) == 1
    request = requests[0]
    assert request.tags["mlops/trigger"] == "sensor" and request.tags["mlops/retrain"] == "true"
    reason = json.loads(request.tags["mlops/trigger_reason"])
    checks = {item["check"] for item in reason["failed_checks"]}
    assert "caravan/drift_report:feature_drift" in checks
    assert again_no_request(loop)

    retrain = loop.harness.launch(request, "caravan_retrain")
    assert retrain.success, failure_lines(retrain)
    statuses = _statuses(loop.harness)
    new_champion = next(v for v, s in statuses.items() if s == "champion")
    assert new_champion != champion and statuses[champion] == "retired"
    published = _publication(loop.harness)
    assert published["version"] == new_champion and published["rows"] == 2000

    with _warehouse(loop.harness) as connection:
        lineage = json.loads(
            connection.execute(
                "select lineage from caravan.model_registry where model_version = ?", [new_champion]
            ).fetchone()[0]
        )
        champion_metric, challenger_metric = connection.execute(
            "select champion_value, challenger_value from caravan.model_validations where model_version = ?",
            [new_champion],
        ).fetchone()
        alerts = {kind for (kind,) in connection.execute("select kind from caravan.alerts").fetchall()}
    assert lineage["training_rows"] == 5822 + 2000  # trained on data including the new batch
    assert lineage["trigger"] == "sensor"
    assert "caravan/drift_report:feature_drift" in json.dumps(lineage["trigger_reason"])
    assert challenger_metric > champion_metric + 0.01  # beats the stale champion on the same customers
    assert {"drift", "retrain_started", "promotion"} <= alerts
    # The retraining run's own checks never start another retrain.
    assert again_no_request(loop)


def again_no_request(loop) -> bool:
    requests, _ = loop.retrain_requests()
    return requests == []


def test_another_population_within_valid_values_is_drift_not_a_blocked_batch(tmp_path, completed_pipeline):
    """Every column moves, but every value is valid: the batch reaches the history, is scored, and
    its drift (not a quality check) asks for a retrain that will learn from it."""
    loop = Loop(tmp_path, completed_pipeline)
    folder = loop.harness.settings.incoming_dir / "caravan"
    paths = write_replay_files(_source(), folder, "stationary", batch_number=1, with_outcomes=False)
    import numpy as np
    import pandas as pd

    export = pd.read_csv(paths["customers"])
    dictionary = pd.read_csv("dbt_project/seeds/caravan/caravan_data_dictionary.csv").query("value_type != 'target'")
    rng = np.random.default_rng(3)
    for row in dictionary.itertuples():
        export[row.source_column] = rng.integers(int(row.min_value), int(row.max_value) + 1, len(export))
    export.to_csv(paths["customers"], index=False)
    requests, loop.incoming_cursor, _ = loop.harness.tick(INCOMING, loop.incoming_cursor)
    result = loop.harness.launch(requests[0], "caravan_batch")
    assert result.success, failure_lines(result)
    drift = _check(result, "feature_drift")
    assert not drift.passed and drift.metadata["requests_retrain"].value is True
    with _warehouse(loop.harness) as connection:
        history_loads = connection.execute(
            "select count(distinct load_id) from caravan.int_customer_history"
        ).fetchone()[0]
    assert history_loads == 2  # admitted into the history: a retrain can learn from it

    requests, _ = loop.retrain_requests()
    assert len(requests) == 1
    reason = requests[0].tags["mlops/trigger_reason"]
    assert "caravan/drift_report:feature_drift" in reason and "stg_customers" not in reason
