"""The `new_customers_scored` check says whether the newest batch's customers were scored, from the
load log and the score history (the tables the pipeline writes), on both sides."""

from datetime import datetime

import duckdb
import pytest

from mlops_assets.defs.monitoring import _new_customers_scored
from mlops_assets.ingestion import LOAD_LOG_COLUMNS

FIRST_LOAD, SECOND_LOAD = datetime(2026, 11, 2, 6, 0, 0, 500_000), datetime(2026, 11, 9, 6, 0, 0, 250_000)


@pytest.fixture
def connection():
    connection = duckdb.connect()
    connection.execute("create schema bank")
    connection.execute(f"create table bank.raw_customer_loads ({LOAD_LOG_COLUMNS})")
    connection.execute(
        """create table bank.score_history (publication_id varchar, published_at timestamp, customer_id varchar,
                                            scored_at timestamp)"""
    )
    _load(connection, "load-1", "accepted", FIRST_LOAD)
    _publish(connection, "pub-1", ["c1", "c2", "c3"], FIRST_LOAD.replace(microsecond=0, second=40))
    yield connection
    connection.close()


def _load(connection, load_id, status, loaded_at):
    connection.execute(
        "insert into bank.raw_customer_loads values (?, ?, 'csv', 'sha', 3, 3, 0, 0, ?, '', ?)",
        [load_id, f"/incoming/{load_id}.csv", status, loaded_at],
    )


def _publish(connection, publication_id, customers, scored_at, published_at=None):
    for customer in customers:
        connection.execute(
            "insert into bank.score_history values (?, ?, ?, ?)",
            [publication_id, published_at or scored_at, customer, scored_at],
        )


def test_the_newest_batch_scored_passes_and_counts_first_time_customers(connection):
    _load(connection, "load-2", "accepted", SECOND_LOAD)
    _publish(connection, "pub-2", ["c2", "c3", "c4"], SECOND_LOAD.replace(microsecond=0, minute=1))
    result = _new_customers_scored(connection, "bank")
    assert result.passed
    assert result.metadata["customers_scored_for_the_first_time"].value == 1
    assert "pub-2 scored the 3 customer(s)" in result.description


def test_a_file_read_again_is_no_new_batch_and_does_not_warn(connection):
    _load(connection, "load-2", "skipped", SECOND_LOAD)
    # The same scores published again by a rerun: the newest batch (load-1) is still the one scored.
    _publish(connection, "pub-2", ["c1", "c2", "c3"], SECOND_LOAD.replace(microsecond=0, minute=1))
    result = _new_customers_scored(connection, "bank")
    assert result.passed and result.metadata["newest_load"].value == "load-1"


@pytest.mark.parametrize("status", ["held", "blocked", "rejected"])
def test_a_batch_not_admitted_warns_that_its_customers_are_not_scored(connection, status):
    _load(connection, "load-2", status, SECOND_LOAD)
    result = _new_customers_scored(connection, "bank")
    assert not result.passed and result.severity.value == "WARN"
    assert f"load-2 (/incoming/load-2.csv, 2026-11-09 06:00) is {status}" in result.description
    assert "publication pub-1" in result.description


def test_old_scores_published_again_after_a_new_batch_warn(connection):
    _load(connection, "load-2", "accepted", SECOND_LOAD)
    _publish(connection, "pub-2", ["c1", "c2", "c3"], FIRST_LOAD.replace(microsecond=0, second=40), SECOND_LOAD)
    result = _new_customers_scored(connection, "bank")
    assert not result.passed and "load-2" in result.description and "re-published scores from" in result.description


def test_nothing_published_yet_warns():
    with duckdb.connect() as connection:
        connection.execute("create schema bank")
        connection.execute(f"create table bank.raw_customer_loads ({LOAD_LOG_COLUMNS})")
        connection.execute(
            "create table bank.score_history (publication_id varchar, published_at timestamp, "
            "customer_id varchar, scored_at timestamp)"
        )
        result = _new_customers_scored(connection, "bank")
    assert not result.passed and "no batch has been scored" in result.description
