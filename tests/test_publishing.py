import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from mlops_assets.publishing import publish_tables, read_published

DUCKDB_CLI = Path(sys.executable).with_name("duckdb")


def test_publication_replaces_the_file_and_leaves_no_temporary_files(tmp_path):
    destination = tmp_path / "published" / "scores.duckdb"
    publish_tables(destination, {"customer_scores": pd.DataFrame({"customer_id": ["a"], "score": [0.1]})})
    publish_tables(destination, {"customer_scores": pd.DataFrame({"customer_id": ["a", "b"], "score": [0.2, 0.3]})})
    assert read_published(destination, "select count(*) as n from customer_scores")["n"].item() == 2
    assert sorted(p.name for p in destination.parent.iterdir()) == ["scores.duckdb"]


def test_failed_publication_keeps_the_previous_file(tmp_path):
    destination = tmp_path / "scores.duckdb"
    publish_tables(destination, {"customer_scores": pd.DataFrame({"score": [0.5]})})
    with pytest.raises(duckdb.Error):
        publish_tables(destination, {"customer_scores": pd.DataFrame({"score": [0.9]}), "bad name!": pd.DataFrame()})
    assert read_published(destination, "select score from customer_scores")["score"].tolist() == [0.5]
    assert [p.name for p in tmp_path.iterdir()] == ["scores.duckdb"]


def test_published_file_opens_in_the_duckdb_1_x_cli(tmp_path):
    """Marketing may use any DuckDB client; the bundled CLI is DuckDB 1.5, older than the library."""
    destination = tmp_path / "scores.duckdb"
    publish_tables(destination, {"customer_scores": pd.DataFrame({"customer_id": ["a", "b"], "score": [0.2, 0.3]})})
    version = subprocess.run([DUCKDB_CLI, "--version"], capture_output=True, text=True, check=True).stdout
    assert version.startswith("v1.")
    output = subprocess.run(
        [DUCKDB_CLI, "-readonly", "-csv", str(destination), "select count(*) as n from customer_scores"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert output.split() == ["n", "2"]


def test_leftovers_of_killed_writers_are_removed_and_live_writes_are_not(tmp_path):
    import os

    from mlops_assets.publishing import remove_abandoned_temporaries

    destination = tmp_path / "caravan.duckdb"
    dead = subprocess.Popen(["true"])
    dead.wait()
    killed = tmp_path / f".caravan.duckdb.{dead.pid}.{'a' * 32}.tmp"
    killed_wal = tmp_path / f".caravan.duckdb.{dead.pid}.{'a' * 32}.tmp.wal"
    running = tmp_path / f".caravan.duckdb.{os.getpid()}.{'b' * 32}.tmp"
    other_file = tmp_path / f".swiss_bank.duckdb.{dead.pid}.{'c' * 32}.tmp"
    for path in (killed, killed_wal, running, other_file):
        path.write_bytes(b"partial")
    removed = remove_abandoned_temporaries(destination)
    assert sorted(p.name for p in removed) == sorted([killed.name, killed_wal.name])
    assert running.exists() and other_file.exists()


def test_history_rows_newer_than_the_published_file_are_dropped(tmp_path):
    from mlops_assets.publishing import drop_unpublished_history

    destination = tmp_path / "caravan.duckdb"
    publish_tables(destination, {"publication": pd.DataFrame({"published_at": [pd.Timestamp("2026-01-02")]})})
    connection = duckdb.connect()
    connection.execute("create schema caravan")
    connection.execute("create table caravan.score_history (publication_id varchar, published_at timestamp)")
    connection.execute(
        "insert into caravan.score_history values ('seen', '2026-01-02'), ('older', '2026-01-01'), "
        "('killed before the swap', '2026-01-03')"
    )
    assert drop_unpublished_history(connection, "caravan", destination) == 1
    remaining = connection.execute("select publication_id from caravan.score_history order by 1").fetchall()
    assert remaining == [("older",), ("seen",)]
    # Without a published file nothing is known to be orphaned: nothing is dropped.
    assert drop_unpublished_history(connection, "caravan", tmp_path / "none.duckdb") == 0
