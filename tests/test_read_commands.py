"""The read-only commands (`mlops models`, `model-card`, `audit`) stay light and keep answering while a
run holds the warehouse.

Light: run as real processes with `python -X importtime`, they import neither Dagster nor Great
Expectations (nor LightGBM, scikit-learn or pandas), which is what kept them at 4-6 s; no timed test
(benchmarks/cli_latency.py prints the wall times). Answering: DuckDB refuses every other process while
a run holds the warehouse, so they read the registry's read copy that each publication writes, and
say so; without a copy they fail with a clear message instead of DuckDB's lock error.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from mlops_assets.read_only import read_copy_path, read_copy_spare_path, write_read_copy
from mlops_assets.settings import PROJECT_ROOT, Settings

HEAVY_PACKAGES = ("dagster", "great_expectations", "lightgbm", "sklearn", "pandas")


def _mlops(home: Path, *arguments: str, importtime: bool = False) -> subprocess.CompletedProcess:
    command = [sys.executable, *(["-X", "importtime"] if importtime else []), "-m", "mlops_assets.cli", *arguments]
    environment = {**os.environ, "MLOPS_HOME": str(home)}
    environment.pop("MLOPS_PUBLISHED_DIR", None)
    return subprocess.run(command, cwd=PROJECT_ROOT, env=environment, capture_output=True, text=True, timeout=60)


def _imported_modules(importtime_output: str) -> set[str]:
    """Module names from `-X importtime` lines: `import time: self | cumulative | <indent>module`."""
    return {
        line.rsplit("|", 1)[1].strip()
        for line in importtime_output.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }


def _facts(settings: Settings) -> tuple[str, str]:
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as connection:
        champion = connection.execute(
            "select model_version from caravan.model_status_events where status = 'champion' order by event_seq desc"
        ).fetchall()[0][0]
        customer = connection.execute("select min(customer_id) from caravan.score_history").fetchall()[0][0]
    return champion, customer


def _commands(champion: str, customer: str) -> dict[str, tuple[list[str], str]]:
    """Each read command and a line its output must contain."""
    return {
        "models": (["models"], champion),
        "model-card": (["model-card", "--version", champion], f"# Model card: {champion}"),
        "audit": (["audit", "--customer", customer], f"Model {champion} (sha256"),
    }


@pytest.fixture
def platform_copy(completed_pipeline, tmp_path) -> Settings:
    """The first run's files in a folder of this test's own (a writer will hold its warehouse)."""
    home = tmp_path / "home"
    shutil.copytree(completed_pipeline.pristine_home, home)
    return Settings.under(home)


def test_read_commands_import_neither_dagster_nor_great_expectations(completed_pipeline):
    settings = completed_pipeline.settings
    for name, (arguments, expected) in _commands(*_facts(settings)).items():
        completed = _mlops(settings.home, *arguments, importtime=True)
        assert completed.returncode == 0, (name, completed.stderr[-2000:])
        assert expected in completed.stdout, (name, completed.stdout[:2000])
        modules = _imported_modules(completed.stderr)
        assert "duckdb" in modules  # the parsing sees the imports at all
        heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY_PACKAGES)
        assert not heavy, f"mlops {name} imported {heavy[:10]}"


def test_each_publication_writes_the_registry_read_copy(completed_pipeline):
    settings = completed_pipeline.settings
    copy = read_copy_path(settings.published_dir, "caravan")
    queries = (
        "select list(model_version order by model_version) from caravan.model_registry",
        "select count(*), max(published_at) from caravan.score_history",
        "select count(*) from caravan.customer_score_audit",
        "select count(*) from caravan.model_cards",
    )
    with (
        duckdb.connect(str(settings.duckdb_path), read_only=True) as warehouse,
        duckdb.connect(str(copy), read_only=True) as read_copy,
    ):
        for query in queries:
            assert read_copy.execute(query).fetchall() == warehouse.execute(query).fetchall(), query
        left_out = {row[0] for row in read_copy.execute("describe caravan.model_registry").fetchall()}
        assert not {"model_text", "reference_profile"} & left_out


def _registry_warehouse(path: Path) -> duckdb.DuckDBPyConnection:
    warehouse = duckdb.connect(str(path))
    warehouse.execute("create schema bank")
    warehouse.execute(
        "create table bank.model_registry as "
        "select 'v1' as model_version, 'text' as model_text, '{}' as reference_profile"
    )
    warehouse.execute(
        "create table bank.score_history as select 'p1' as publication_id, i as customer_id from range(3) t(i)"
    )
    return warehouse


def test_the_read_copy_follows_the_history_publication_by_publication(tmp_path):
    """Each copy is the one before the last brought level in place (rewriting or copying the whole
    history every run grew with every publication); a copy that cannot be brought level is rebuilt."""
    warehouse = _registry_warehouse(tmp_path / "warehouse.duckdb")
    copy = tmp_path / "published" / "bank_registry.duckdb"
    spare = read_copy_spare_path(copy)

    def publish_and_compare() -> set[str]:
        """Write the copy; assert its history equals the warehouse's; the copy's tables."""
        write_read_copy(warehouse, "bank", copy)
        query = "select * from bank.score_history order by all"
        with duckdb.connect(str(copy), read_only=True) as reader:
            assert reader.execute(query).fetchall() == warehouse.execute(query).fetchall()
            assert (
                reader.execute("describe bank.score_history").fetchall()
                == warehouse.execute("describe bank.score_history").fetchall()
            )
            return {row[0] for row in reader.execute("select table_name from information_schema.tables").fetchall()}

    publish_and_compare()
    with duckdb.connect(str(copy)) as previous:  # marks the file: it survives only where a file is reused
        previous.execute("create table bank.marker as select 1 as kept")
    warehouse.execute("insert into bank.score_history select 'p2', i from range(2) t(i)")
    replaced = os.stat(copy).st_ino
    assert "marker" in publish_and_compare()  # no spare yet: a byte copy of the copy, p2 appended
    assert os.stat(spare).st_ino == replaced  # the copy it replaced is kept as the spare
    warehouse.execute("delete from bank.score_history where publication_id = 'p1'")  # a swap that failed
    spare_before = os.stat(spare).st_ino
    assert "marker" in publish_and_compare()
    assert os.stat(copy).st_ino == spare_before  # the spare, brought level in place: nothing copied
    warehouse.execute("alter table bank.score_history add column reasons varchar")  # a migration
    assert "marker" not in publish_and_compare()  # rebuilt from the warehouse
    copy.write_bytes(b"not a database" * 100)
    assert publish_and_compare() >= {"score_history", "model_registry", "read_copy"}
    assert publish_and_compare() >= {"score_history", "model_registry", "read_copy"}  # the broken spare
    assert sorted(p.name for p in copy.parent.iterdir()) == sorted([copy.name, spare.name])  # no temporary


def test_a_reader_of_an_old_copy_keeps_it_whole_while_publications_go_on(tmp_path):
    """A reader that opened the copy before the last swap holds what is now the spare: the next
    publication cannot bring that file level in place, so it starts from the current copy, and the
    reader keeps reading the history it opened, unchanged."""
    warehouse = _registry_warehouse(tmp_path / "warehouse.duckdb")
    copy = tmp_path / "published" / "bank_registry.duckdb"
    write_read_copy(warehouse, "bank", copy)
    query = "select * from bank.score_history order by all"
    # Another process, as readers are (DuckDB shares one open database per path within a process).
    reader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys\n"
            f"connection = duckdb.connect({str(copy)!r}, read_only=True)\n"
            "for line in sys.stdin:\n"
            f"    print(len(connection.execute({query!r}).fetchall()), flush=True)\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:

        def rows_the_reader_sees() -> int:
            reader.stdin.write("\n")
            reader.stdin.flush()
            return int(reader.stdout.readline())

        assert rows_the_reader_sees() == 3
        for publication in ("p2", "p3", "p4"):
            warehouse.execute(f"insert into bank.score_history select '{publication}', i from range(2) t(i)")
            write_read_copy(warehouse, "bank", copy)
            assert rows_the_reader_sees() == 3
            with duckdb.connect(str(copy), read_only=True) as later:
                assert later.execute(query).fetchall() == warehouse.execute(query).fetchall()
    finally:
        reader.stdin.close()
        assert reader.wait(timeout=30) == 0
    warehouse.execute("insert into bank.score_history select 'p5', i from range(2) t(i)")
    spare_before = os.stat(read_copy_spare_path(copy)).st_ino
    write_read_copy(warehouse, "bank", copy)  # no reader left: the spare is brought level in place
    assert os.stat(copy).st_ino == spare_before


def test_read_commands_answer_from_the_read_copy_while_a_run_holds_the_warehouse(platform_copy):
    champion, customer = _facts(platform_copy)
    # A writer in this process holds the file, as a run's step does: other processes cannot open it.
    with duckdb.connect(str(platform_copy.duckdb_path)):
        for name, (arguments, expected) in _commands(champion, customer).items():
            completed = _mlops(platform_copy.home, *arguments)
            assert completed.returncode == 0, (name, completed.stderr[-2000:])
            assert expected in completed.stdout, (name, completed.stdout[:2000])
            assert "The warehouse is in use by a run: read from the copy" in completed.stderr

        # The other side: without a read copy the command fails with a message, not DuckDB's lock error.
        read_copy_path(platform_copy.published_dir, "caravan").unlink()
        completed = _mlops(platform_copy.home, "models")
        assert completed.returncode == 1
        assert "is in use by a run, and there is no read copy of the registry yet" in completed.stderr
        assert "Traceback" not in completed.stderr

    # Once the writer is gone the warehouse itself answers again.
    completed = _mlops(platform_copy.home, "models")
    assert completed.returncode == 0 and champion in completed.stdout
    assert "read copy" not in completed.stderr
