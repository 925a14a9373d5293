"""Marketing reads the published scores from another process while the pipeline runs."""

import json
import subprocess
import sys
import textwrap
import time

from conftest import copy_of_first_run

READER = textwrap.dedent(
    """
    import json, sys, time, duckdb
    path, stop_file, log_file = sys.argv[1:4]
    import pathlib
    with open(log_file, "w") as log:
        while not pathlib.Path(stop_file).exists():
            try:
                with duckdb.connect(path, read_only=True) as connection:
                    rows, versions, version = connection.execute(
                        "select count(*), count(distinct model_version), any_value(model_version) "
                        "from customer_scores"
                    ).fetchone()
                    published_version, customers = connection.execute(
                        "select model_version, customers from publication"
                    ).fetchone()
                record = {"rows": rows, "versions": versions, "version": version,
                          "publication_version": published_version, "publication_rows": customers}
            except Exception as error:
                record = {"error": f"{type(error).__name__}: {error}"}
            log.write(json.dumps(record) + "\\n")
            log.flush()
            time.sleep(0.005)
    """
)


def test_readers_never_see_a_lock_error_or_a_partial_table_during_runs(modest_first_run, tmp_path):
    # A first champion that the default model will beat (a copy of the session's modest first run).
    harness = copy_of_first_run(modest_first_run, tmp_path / "platform")
    published = harness.settings.published_dir / "caravan.duckdb"
    stop_file, log_file = tmp_path / "stop", tmp_path / "reads.jsonl"
    reader = subprocess.Popen([sys.executable, "-c", READER, str(published), str(stop_file), str(log_file)])
    try:
        time.sleep(1.0)
        assert harness.run().success  # a full run: load, dbt, train, promote, score, publish a new version
        time.sleep(1.0)
    finally:
        stop_file.touch()
        reader.wait(timeout=60)

    reads = [json.loads(line) for line in log_file.read_text().splitlines()]
    errors = [r["error"] for r in reads if "error" in r]
    assert errors == []
    assert len(reads) > 50
    assert all(r["rows"] == 5822 and r["versions"] == 1 for r in reads)
    assert all(r["version"] == r["publication_version"] and r["publication_rows"] == 5822 for r in reads)
    # the reads span the swap: both the first and the second model version were seen
    assert len({r["version"] for r in reads}) == 2
