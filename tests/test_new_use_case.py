"""A new propensity model from one export, as the README walkthrough does it: `mlops new-use-case`,
then `mlops run` (and `mlops batch`), nothing written by hand.

The commands run in subprocesses on a copy of the project (they write the use case's YAML, data
dictionary and dbt files into the project), with their own MLOPS_HOME and Dagster instance.
One copy is shared by the tests of this module: ISLP's Default (bundled, data/islp_default/) and a
semicolon export with decimal commas derived from it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import yaml

from mlops_assets.onboarding import OnboardingError, new_use_case
from mlops_assets.settings import PROJECT_ROOT

DEFAULT_CSV = PROJECT_ROOT / "data" / "islp_default" / "Default.csv"
SKIPPED = {".git", ".venv", ".tools", "var", "dagster_home", "__pycache__", "logs", ".pytest_cache", "node_modules"}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> dict:
    """A copy of the project (code, dbt project, data) and the environment to run `mlops` in it."""
    root = tmp_path_factory.mktemp("project") / "bank"
    shutil.copytree(PROJECT_ROOT, root, ignore=lambda folder, names: [n for n in names if n in SKIPPED])
    home = tmp_path_factory.mktemp("home")
    environment = {
        **os.environ,
        "PYTHONPATH": str(root),  # the copy's package, before the installed (editable) one
        "MLOPS_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster"),
        "MLOPS_CODE_VERSION": "test",
    }
    (home / "dagster").mkdir()
    return {"root": root, "home": home, "env": environment}


def mlops(project: dict, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlops_assets.cli", *arguments],
        cwd=project["root"],
        env=project["env"],
        capture_output=True,
        text=True,
        timeout=900,
    )


def published_scores(project: dict, name: str) -> pd.DataFrame:
    with duckdb.connect(str(project["home"] / "published" / f"{name}.duckdb"), read_only=True) as connection:
        return connection.execute("select * from customer_scores").fetchdf()


def test_default_onboarded_with_two_commands_publishes_calibrated_scores(project):
    created = mlops(project, "new-use-case", "credit_default", "--from", str(DEFAULT_CSV), "--target", "default")
    assert created.returncode == 0, created.stderr
    root = project["root"]
    definition = yaml.safe_load((root / "mlops_assets" / "use_cases" / "credit_default.yaml").read_text())
    assert definition["target_encoding"] == {"positive": ["Yes"], "negative": ["No"]}
    assert {f["name"]: f["type"] for f in definition["features"]} == {
        "student": "categorical",
        "balance": "numeric",
        "income": "numeric",
    }
    staging = root / "dbt_project" / "models" / "staging" / "credit_default" / "stg_credit_default__customers.sql"
    assert "{{ staged_customers('credit_default') }}" in staging.read_text()
    # The dictionary's structural rules are dbt tests of the generated staging model, as for caravan.
    models = yaml.safe_load((staging.parent / "_stg_credit_default__models.yml").read_text())["models"][0]
    assert {next(iter(t)) for t in models["data_tests"]} == {
        "dictionary_columns",
        "dictionary_types",
        "dictionary_completeness",
        "dictionary_valid_values",
    }
    assert "credit_default" not in (root / "dbt_project" / "dbt_project.yml").read_text()
    # No suite files: the suites bootstrap from the data dictionary (and the first accepted load).
    assert not (root / "mlops_assets" / "quality" / "suites" / "credit_default").exists()

    again = mlops(project, "new-use-case", "credit_default", "--from", str(DEFAULT_CSV), "--target", "default")
    assert again.returncode == 1 and "exists already" in again.stderr

    run = mlops(project, "run", "--use-case", "credit_default", "--json")
    assert run.returncode == 0, run.stdout + run.stderr
    summary = json.loads(run.stdout)
    assert summary["champion"] and summary["published"]
    with duckdb.connect(str(project["home"] / "warehouse.duckdb"), read_only=True) as connection:
        validated = connection.execute(
            "select count(distinct asset), bool_and(success) from credit_default.validation_results"
        ).fetchall()[0]
    assert validated[0] >= 3 and validated[1]  # raw, staged, mart (and scores) suites ran and passed
    scores = published_scores(project, "credit_default")
    base_rate = (pd.read_csv(DEFAULT_CSV)["default"] == "Yes").mean()
    assert len(scores) == 10_000 and scores["score"].between(0, 1).all()
    # Calibrated: the mean probability is the share of defaults (3.3%), not a ranking score.
    assert abs(scores["score"].mean() - base_rate) < 0.01
    assert scores["model_version"].nunique() == 1
    with duckdb.connect(str(project["home"] / "warehouse.duckdb"), read_only=True) as connection:
        registered = connection.execute(
            "select model_version from credit_default.model_registry where model_version = ?",
            [scores["model_version"].iloc[0]],
        ).fetchall()
    assert registered


def test_a_use_case_onboarded_before_a_generated_file_existed_gets_it_on_the_next_command(project):
    """Generated files added by a later version (here the latest-records model the mart reads) are
    written for use cases onboarded before, the next time a command refreshes dbt's manifest."""
    latest = (
        project["root"] / "dbt_project" / "models" / "intermediate" / "credit_default"
    ) / "int_credit_default__latest_records.sql"
    assert latest.exists()  # onboarded by the test above
    latest.unlink()
    refresh = "from mlops_assets.dbt_manifest import ensure_fresh_manifest; print(ensure_fresh_manifest())"
    done = subprocess.run(
        [sys.executable, "-c", refresh], cwd=project["root"], env=project["env"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "latest_records(ref('int_credit_default__customer_history'))" in latest.read_text()
    manifest = json.loads((project["root"] / "dbt_project" / "target" / "manifest.json").read_text())
    assert "model.bank_mlops.int_credit_default__latest_records" in manifest["nodes"]


def test_bad_exports_and_unknown_columns_are_refused_and_nothing_is_written(project, tmp_path):
    unknown = mlops(project, "new-use-case", "other", "--from", str(DEFAULT_CSV), "--target", "defaulted")
    assert unknown.returncode == 1 and "--target 'defaulted' is not a column" in unknown.stderr
    assert not (project["root"] / "mlops_assets" / "use_cases" / "other.yaml").exists()
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(OnboardingError, match="empty.csv: the file is empty"):
        new_use_case("other", empty, "default", project_root=project["root"])
    three_valued = tmp_path / "three.csv"
    pd.DataFrame({"x": [1, 2, 3, 4], "y": ["a", "b", "c", "a"]}).to_csv(three_valued, index=False)
    with pytest.raises(OnboardingError, match="'y' has 3 distinct values"):
        new_use_case("other", three_valued, "y", project_root=project["root"])
    with pytest.raises(OnboardingError, match="exists already"):
        new_use_case("caravan", DEFAULT_CSV, "default", project_root=project["root"])
    assert not list((project["root"] / "dbt_project" / "models").rglob("*other*"))


def _semicolon_export(frame: pd.DataFrame, path: Path, columns: list[str]) -> Path:
    """German-style export: `;` between fields, `,` as the decimal mark, yes/no in lower case."""
    frame[columns].to_csv(path, sep=";", decimal=",", index=False)
    return path


def test_semicolon_export_with_decimal_commas_then_a_batch_and_outcomes_in_the_same_dialect(project, tmp_path):
    default = pd.read_csv(DEFAULT_CSV)
    german = pd.DataFrame(
        {
            "kunden_nr": [f"K{i:05d}" for i in range(len(default))],
            "ausfall": default["default"].str.lower(),
            "student": default["student"].map({"Yes": "ja", "No": "nein"}),
            "saldo": default["balance"].round(2),
            "einkommen": default["income"].round(2),
        }
    )
    first, batch = german.iloc[:8000], german.iloc[8000:]
    export = _semicolon_export(first, tmp_path / "kunden.csv", list(german.columns))
    assert "," in export.read_text().splitlines()[1]  # decimal commas indeed
    created = mlops(
        project, "new-use-case", "kredit", "--from", str(export), "--target", "ausfall", "--id", "kunden_nr"
    )
    assert created.returncode == 0, created.stderr
    source = yaml.safe_load((project["root"] / "mlops_assets" / "use_cases" / "kredit.yaml").read_text())["source"]
    assert (source["delimiter"], source["decimal"], source["id_column"]) == (";", ",", "kunden_nr")

    run = mlops(project, "run", "--use-case", "kredit", "--json")
    assert run.returncode == 0, run.stdout + run.stderr
    assert len(published_scores(project, "kredit")) == 8000

    # The next batch (other customers) with its outcomes, both in the use case's dialect.
    customers = _semicolon_export(batch.assign(ausfall=""), tmp_path / "customers_1.csv", list(german.columns))
    outcomes = _semicolon_export(batch, tmp_path / "outcomes_1.csv", ["kunden_nr", "ausfall"])
    loaded = mlops(
        project, "batch", "--use-case", "kredit", "--customers", str(customers), "--outcomes", str(outcomes), "--json"
    )
    assert loaded.returncode in (0, 3), loaded.stdout + loaded.stderr  # 3: e.g. drift checks failed
    scores = published_scores(project, "kredit")
    assert set(batch["kunden_nr"]) <= set(scores["customer_id"])
    assert scores.set_index("customer_id").loc[batch["kunden_nr"], "score"].between(0, 1).all()
    with duckdb.connect(str(project["home"] / "warehouse.duckdb"), read_only=True) as connection:
        stored = connection.execute(
            "select count(*), count(*) filter (where ausfall = 'yes') from kredit.raw_outcomes"
        ).fetchall()[0]
        labels = connection.execute(
            """select count(*), sum(ausfall) from kredit.customer_features
               where ausfall is not null and customer_id >= 'K08000'"""
        ).fetchall()[0]
    buyers = int((batch["ausfall"] == "yes").sum())
    assert stored == (2000, buyers) and labels == (2000, buyers)

    # Every use case of the project still loads side by side (what `dagster dev` loads).
    listed = subprocess.run(
        [sys.executable, "-c", "from mlops_assets.definitions import defs; print(sorted(j.name for j in defs.jobs))"],
        cwd=project["root"],
        env=project["env"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert listed.returncode == 0, listed.stderr
    for name in ("caravan_pipeline", "swiss_bank_pipeline", "credit_default_pipeline", "kredit_pipeline"):
        assert name in listed.stdout


def test_profile_of_a_parquet_export_with_time_sensitive_and_declared_positive_value(tmp_path):
    """The files `new-use-case` writes, without running anything (a bare project folder)."""
    root = tmp_path / "bare"
    (root / "mlops_assets" / "use_cases").mkdir(parents=True)
    frame = pd.DataFrame(
        {
            "KundenNr": [f"K{i}" for i in range(300)],
            "Campaign Date": pd.date_range("2026-01-01", periods=300, freq="D").date,
            "Age": [20 + i % 60 for i in range(300)],
            "Region": [["north", "south", "east"][i % 3] for i in range(300)],
            "Outcome": [["accepted", "declined"][i % 4 == 0] for i in range(300)],
            "Notes": [f"free text {i}" for i in range(300)],
        }
    )
    export = tmp_path / "campaign.parquet"
    frame.to_parquet(export)
    created = new_use_case(
        "campaign",
        export,
        "Outcome",
        id_column="KundenNr",
        time_column="Campaign Date",
        positive=["accepted"],
        sensitive=["Age"],
        project_root=root,
    )
    definition = yaml.safe_load(created.yaml_path.read_text())
    assert definition["source"]["format"] == "parquet" and definition["source"]["id_column"] == "KundenNr"
    assert definition["target"] == "outcome" and definition["target_encoding"] == {
        "positive": ["accepted"],
        "negative": ["declined"],
    }
    assert definition["time"]["order"] == "column" and definition["time"]["column"] == "campaign_date"
    assert definition["sensitive_attributes"] == ["age"]
    assert [f["name"] for f in definition["features"]] == ["age", "region"]  # not the id, time, notes
    assert "Not used as features (free text" in created.yaml_path.read_text()
    dictionary = pd.read_csv(created.dictionary_path).set_index("source_column")
    assert dictionary.loc["Region", "allowed_values"] == "east|north|south"
    assert dictionary.loc["Age", "min_value"] == 0 and "observed 20 to 79" in dictionary.loc["Age", "description"]
    assert dictionary.loc["KundenNr", "value_type"] == "identifier"
    assert dictionary.loc["Campaign Date", "description"] == "Campaign date"
