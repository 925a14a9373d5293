"""Tampering with the champion's artefact, sha256 recomputed: scoring refuses it with an alert and the
published scores of the last good model stay. Runs on a copy of the completed pipeline's platform."""

from __future__ import annotations

import hashlib
import json
import re
import shutil

import duckdb
import pytest

from mlops_assets.definitions import build_definitions
from mlops_assets.integrity import ArtifactTamperedError, signature, verify_model
from mlops_assets.ml.artifacts import artifact_sha256
from mlops_assets.publishing import read_published
from mlops_assets.registry import current_champion
from mlops_assets.run_console import RunSummary, collect_events
from mlops_assets.settings import Settings

PUBLISHED_STATE = (
    "select (select dagster_run_id from publication) run, sum(hash(customer_id, score)) h from customer_scores"
)


def _copy_platform(source: Settings, target_home) -> Settings:
    target = Settings.under(target_home)
    target.prepare()
    shutil.copy(source.duckdb_path, target.duckdb_path)
    shutil.copytree(source.published_dir, target.published_dir, dirs_exist_ok=True)
    shutil.copytree(source.home / "secrets", target.home / "secrets")
    return target


def _failure(result) -> str:
    summary = RunSummary("", "caravan", "", result.run_id, result.success, False)
    collect_events(summary, result.all_events)
    return "\n".join(summary.failed_steps)


def test_a_tampered_champion_with_a_recomputed_sha256_is_refused(completed_pipeline, tmp_path):
    settings = _copy_platform(completed_pipeline.settings, tmp_path / "copy")
    scoring = build_definitions(settings).resolve_job_def("caravan_scoring")
    # The untouched champion scores (the signature check passes) ...
    assert scoring.execute_in_process(instance=completed_pipeline.instance).success
    published = settings.published_dir / "caravan.duckdb"
    before = tuple(read_published(published, PUBLISHED_STATE).iloc[0])

    # ... then someone with write access to the warehouse edits the model and recomputes its sha256.
    with duckdb.connect(str(settings.duckdb_path)) as connection:
        champion = current_champion(connection, "caravan")
        text = connection.execute(
            "select model_text from caravan.model_registry where model_version = ?", [champion]
        ).fetchall()[0][0]
        edited = re.sub(r"leaf_value=-?[0-9.e+-]+", "leaf_value=5", text, count=1)
        assert edited != text
        calibration = connection.execute(
            "select calibration from caravan.model_registry where model_version = ?", [champion]
        ).fetchall()[0][0]
        # The attacker knows the scheme: the sha256 covers the text and the calibration map.
        digest = artifact_sha256(edited, json.loads(calibration) if calibration else None)
        for table in ("model_registry", "champion_model"):
            connection.execute(
                f"update caravan.{table} set model_text = ?, sha256 = ? where model_version = ?",
                [edited, digest, champion],
            )

    result = scoring.execute_in_process(instance=completed_pipeline.instance, raise_on_error=False)
    assert not result.success
    failure = _failure(result)
    assert "does not match the signature" in failure and champion in failure, failure
    assert tuple(read_published(published, PUBLISHED_STATE).iloc[0]) == before  # last good scores stay
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as connection:
        alerts = connection.execute(
            "select kind, severity from caravan.alerts where dagster_run_id = ?", [result.run_id]
        ).fetchall()
    assert alerts == [("integrity", "error")]


def test_signatures_depend_on_the_key_and_missing_ones_are_refused():
    connection = duckdb.connect()
    connection.execute("create schema caravan")
    connection.execute(
        "create table caravan.model_signatures (model_version varchar, sha256 varchar, signature varchar, "
        "signed_at timestamp)"
    )
    text = "tree\nleaf_value=0.1\n"
    digest = hashlib.sha256(text.encode()).hexdigest()
    with pytest.raises(ArtifactTamperedError, match="no signature"):
        verify_model(connection, "caravan", "v1", text, b"key")
    # A signature made with another key (a forger without the platform's key) does not verify.
    connection.execute(
        "insert into caravan.model_signatures values ('v1', ?, ?, now())", [digest, signature(b"other", "v1", digest)]
    )
    with pytest.raises(ArtifactTamperedError, match="does not match"):
        verify_model(connection, "caravan", "v1", text, b"key")
    verify_model(connection, "caravan", "v1", text, b"other")
