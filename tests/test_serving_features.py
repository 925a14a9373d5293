"""The scoring service's feature statement (dbt's compiled SQL, prepared once per connection) against
the batch path: the mart the pipeline built with `dbt build`, column for column, and the published score.

No service process here (tests/test_serving.py calls the real server); these read the session's
completed caravan pipeline and build features in process, so many request shapes cost little.
"""

from __future__ import annotations

import random
import threading
import time
from datetime import datetime

import duckdb
import pandas as pd
import pytest

from mlops_assets.integrity import signing_key
from mlops_assets.ml.training import matrix_of_values
from mlops_assets.serving.artefacts import load_served_model, models_dir, read_manifest
from mlops_assets.serving.features import OnlineFeatures, RecordError, compile_feature_sql
from mlops_assets.serving.scoring import Scorer, score_with
from mlops_assets.serving.state import ModelSet, ServedUseCase
from mlops_assets.use_cases import get_use_case

LOADED_AT = datetime(2026, 11, 26, 9, 30, 0, 123456)
# Columns that describe the load, not the customer: the service's request is its own load.
LOAD_COLUMNS = ["load_id", "loaded_at"]


@pytest.fixture(scope="module")
def caravan(completed_pipeline):
    home = completed_pipeline.pristine_home
    use_case = get_use_case("caravan")
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as connection:
        mart = connection.execute("select * from caravan.customer_features").fetchdf().set_index("customer_id")
        raw = connection.execute(
            "select * from caravan.raw_customers where _quarantine_reason is null order by customer_id"
        ).fetchdf()
    records = {
        row["customer_id"]: {k: v for k, v in row.items() if not k.startswith("_")} for row in raw.to_dict("records")
    }
    published = home / "published"
    manifest = read_manifest(published, "caravan")
    champion = load_served_model(
        models_dir(published, "caravan"), manifest["champion"], signing_key(home, create=False)
    )
    with duckdb.connect(str(published / "caravan.duckdb"), read_only=True) as connection:
        scores = connection.execute("select customer_id, score from customer_scores").fetchdf().set_index("customer_id")
    features = OnlineFeatures(use_case, compile_feature_sql(use_case), connections=2)
    return features, mart, records, champion, scores["score"]


def service_scores(features: OnlineFeatures, model, records: list[dict]) -> list[float]:
    """The service's scores of `records`: fetched feature rows, the model matrix, the champion."""
    rows = features.rows(records, LOADED_AT)
    return list(score_with(model, matrix_of_values(model.booster, model.artifact.features, rows.column)))


def _assert_like_the_mart(built: pd.DataFrame, mart: pd.DataFrame, customer_ids: list[str], ignore=()) -> None:
    assert list(built["customer_id"]) == customer_ids  # request order
    expected = mart.loc[customer_ids].reset_index().drop(columns=[*LOAD_COLUMNS, *ignore])
    pd.testing.assert_frame_equal(built.drop(columns=[*LOAD_COLUMNS, *ignore]), expected, check_exact=True)


def test_features_of_many_records_in_one_request_equal_the_batch_mart_in_request_order(caravan):
    features, mart, records, champion, published = caravan
    customer_ids = random.Random(3).sample(sorted(records), 40)  # not in id order
    built = features.build([records[c] for c in customer_ids], LOADED_AT)
    _assert_like_the_mart(built, mart, customer_ids)
    scores = service_scores(features, champion, [records[c] for c in customer_ids])
    assert scores == pytest.approx(list(published.loc[customer_ids]), rel=1e-12)
    assert (built["loaded_at"] == pd.Timestamp(LOADED_AT)).all()


def test_one_record_at_a_time_and_again_on_the_same_connections(caravan):
    features, mart, records, champion, published = caravan
    customer_ids = sorted(records)[:5]
    for _ in range(2):  # the second round reuses the prepared statements
        for customer_id in customer_ids:
            built = features.build([records[customer_id]], LOADED_AT)
            _assert_like_the_mart(built, mart, [customer_id])
            scores = service_scores(features, champion, [records[customer_id]])
            assert scores == pytest.approx([published[customer_id]], rel=1e-12)


def test_unusual_spellings_of_valid_values_give_the_batch_features(caravan):
    """JSON numbers instead of text, signs, leading zeros, surrounding spaces (these take the path
    through ingestion's SQL rules first), and a missing target: the same features as the batch."""
    features, mart, records, champion, published = caravan
    customer_ids = sorted(records)[10:14]
    originals = [records[c] for c in customer_ids]
    unusual = [
        {**originals[0], "MOSTYPE": int(originals[0]["MOSTYPE"]), "PPERSAUT": int(originals[0]["PPERSAUT"])},
        {**originals[1], "MAANTHUI": "+" + originals[1]["MAANTHUI"], "MGEMLEEF": "0" + originals[1]["MGEMLEEF"]},
        {**originals[2], "MOSTYPE": f"  {originals[2]['MOSTYPE']} ", "APERSAUT": f"{originals[2]['APERSAUT']}  "},
        {**originals[3], "Purchase": None},
    ]
    built = features.build(unusual, LOADED_AT)
    _assert_like_the_mart(built, mart, customer_ids, ignore=["purchased_caravan_policy"])
    assert built["purchased_caravan_policy"].isna().tolist() == [False, False, False, True]
    assert service_scores(features, champion, unusual) == pytest.approx(list(published.loc[customer_ids]), rel=1e-12)
    # Without the target column at all (a new customer's export row has none).
    without_target = {k: v for k, v in originals[3].items() if k != "Purchase"}
    _assert_like_the_mart(
        features.build([without_target], LOADED_AT), mart, [customer_ids[3]], ignore=["purchased_caravan_policy"]
    )


def test_text_that_is_sql_stays_data_and_bad_values_name_record_and_field(caravan):
    features, mart, records, _, _ = caravan
    first, second = sorted(records)[20:22]
    hostile = {**records[first], "customer_id": "x'); drop table raw_customers; --"}
    built = features.build([hostile, records[second]], LOADED_AT)
    assert list(built["customer_id"]) == [hostile["customer_id"], second]
    # The statement is intact afterwards: the next request still gets the batch features.
    _assert_like_the_mart(features.build([records[first]], LOADED_AT), mart, [first])
    with pytest.raises(RecordError) as raised:
        features.build([records[first], {**records[second], "MOSTYPE": "1e400"}], LOADED_AT)
    assert [(i, field) for i, field, _ in raised.value.problems] == [(1, "MOSTYPE")]


def _scorer(caravan, connections: int) -> Scorer:
    features, _, _, champion, _ = caravan
    use_case = get_use_case("caravan")
    served = ServedUseCase("caravan", models=ModelSet(("test",), champion, (), "now"))
    return Scorer(
        "caravan",
        OnlineFeatures(use_case, features.sql, connections=connections),
        served,
        canary_share=lambda: 0.0,
        readable_names=use_case.readable_names(),
        reasons_per_customer=3,
    )


def test_concurrent_requests_are_scored_together_with_the_answers_they_get_alone(caravan, monkeypatch):
    _, _, records, _, published = caravan
    scorer = _scorer(caravan, connections=1)
    customer_ids = sorted(records)[30:60]
    requests = [[records[c] for c in customer_ids[i : i + 3]] for i in range(0, 30, 3)]
    requests.append([records[customer_ids[3]]])  # the same customer as request 1: never in one batch with it
    alone = [scorer.score_alone(request) for request in requests]

    batches, release = [], threading.Event()
    score_alone = scorer.score_alone

    def recorded(records_of_batch):
        batches.append([r["customer_id"] for r in records_of_batch])
        if len(batches) == 1:
            release.wait(10)  # hold the only connection while the other requests arrive
        return score_alone(records_of_batch)

    monkeypatch.setattr(scorer, "score_alone", recorded)
    answers = [None] * len(requests)

    def client(i):
        answers[i] = scorer.score(requests[i])

    threads = [threading.Thread(target=client, args=(0,))]
    threads[0].start()
    _wait_until(lambda: batches)
    threads += [threading.Thread(target=client, args=(i,)) for i in range(1, len(requests))]
    for thread in threads[1:]:
        thread.start()
    _wait_until(lambda: len(scorer._pending) == len(requests) - 1)
    release.set()
    for thread in threads:
        thread.join(30)
    # The first request alone, the nine others together, the repeated customer in a batch of its own.
    assert [len(batch) for batch in batches] == [3, 27, 1]
    for got, expected, request in zip(answers, alone, requests, strict=True):
        assert got.customer_ids == [r["customer_id"] for r in request]
        assert list(got.answered) == list(expected.answered) == list(published.loc[got.customer_ids])
        assert got.reasons == expected.reasons and (got.inputs == expected.inputs).all()


def test_a_request_failing_in_a_batch_gets_its_own_error_and_the_others_their_scores(caravan, monkeypatch):
    _, _, records, _, published = caravan
    scorer = _scorer(caravan, connections=1)
    customer_ids = sorted(records)[60:66]
    score_alone, release, calls = scorer.score_alone, threading.Event(), []

    def failing(records_of_batch):
        calls.append(len(records_of_batch))
        if len(calls) == 1:
            release.wait(10)
        if any(r["customer_id"] == customer_ids[3] for r in records_of_batch):
            raise RuntimeError("feature statement failed")
        return score_alone(records_of_batch)

    monkeypatch.setattr(scorer, "score_alone", failing)
    outcomes = {}

    def client(customer_id):
        try:
            outcomes[customer_id] = scorer.score([records[customer_id]]).answered[0]
        except RuntimeError as error:
            outcomes[customer_id] = error

    threads = [threading.Thread(target=client, args=(customer_ids[0],))]
    threads[0].start()
    _wait_until(lambda: calls)
    threads += [threading.Thread(target=client, args=(c,)) for c in customer_ids[1:]]
    for thread in threads[1:]:
        thread.start()
    _wait_until(lambda: len(scorer._pending) == 5)
    release.set()
    for thread in threads:
        thread.join(30)
    assert calls == [1, 5, 1, 1, 1, 1, 1]  # the batch of five failed, then each of its requests alone
    assert isinstance(outcomes.pop(customer_ids[3]), RuntimeError)
    assert outcomes == {c: published[c] for c in outcomes}


def _wait_until(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met within the timeout"
        time.sleep(0.01)
