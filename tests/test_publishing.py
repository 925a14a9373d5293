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
