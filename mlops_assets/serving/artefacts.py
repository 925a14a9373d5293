"""Model artefacts for the scoring service, exported lock-free into the published folder.

The service must never open the pipeline's warehouse (DuckDB refuses every other process while the
pipeline holds it), so the pipeline exports the models the service needs next to the published scores:

    <published>/models/<use case>/<version>.lgb.txt   LightGBM text format (tree structure and numbers)
    <published>/models/<use case>/<version>.json      the registry row without the text (features,
                                                     score offset, metrics, ...; JSON, never pickle)
    <published>/models/<use case>/serving.json        which version is champion and which are
                                                     challengers (pending approval), with their sha256

Every file is written under a temporary name, flushed and renamed into place, and `serving.json` is
replaced last: a reader sees the previous set of models or the new one. The service verifies each
artefact's sha256 against `serving.json` and the model's own record, and its HMAC signature (made with
a key the published folder does not hold, see mlops_assets/integrity.py) before it serves it: a changed
artefact is refused even when whoever changed it recomputed every sha256, and the previous model keeps
serving.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from mlops_assets.integrity import ArtifactTamperedError, check_signature
from mlops_assets.ml.artifacts import ArtifactIntegrityError, ModelArtifact, artifact_sha256

if TYPE_CHECKING:
    import lightgbm as lgb

MANIFEST_NAME = "serving.json"
SHADOW_STATUSES = ("pending_approval", "candidate")


def models_dir(published_dir: Path, use_case: str) -> Path:
    return Path(published_dir) / "models" / use_case


def manifest_path(published_dir: Path, use_case: str) -> Path:
    return models_dir(published_dir, use_case) / MANIFEST_NAME


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _export_model(folder: Path, artifact: ModelArtifact) -> None:
    """Write a version's text and record once; versions are immutable, so existing files are kept
    when their checksum still matches (a tampered file is rewritten from the registry)."""
    text_path = folder / f"{artifact.model_version}.lgb.txt"
    stored = text_path.read_text(encoding="utf-8") if text_path.exists() else None
    if stored is None or artifact_sha256(stored, artifact.calibration) != artifact.sha256:
        _write_atomically(text_path, artifact.model_text)
    record = artifact.to_record()
    record.pop("model_text")
    _write_atomically(folder / f"{artifact.model_version}.json", json.dumps(record, default=str, sort_keys=True))


def export_serving_models(
    published_dir: Path,
    use_case: str,
    champion: ModelArtifact,
    shadows: list[tuple[ModelArtifact, str]],
    exported_at: datetime,
    signatures: dict[str, str],
    run_id: str | None = None,
) -> Path:
    """Export the champion and the shadow models ((artifact, status) pairs) with the signatures recorded
    at registration (version -> HMAC), then swap the manifest."""
    champion.verify()
    folder = models_dir(published_dir, use_case)
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for artifact, status in [(champion, "champion"), *shadows]:
        artifact.verify()
        _export_model(folder, artifact)
        entries.append(
            {
                "model_version": artifact.model_version,
                "sha256": artifact.sha256,
                "signature": signatures.get(artifact.model_version),
                "status": status,
            }
        )
    manifest = {
        "use_case": use_case,
        "exported_at": exported_at.isoformat(),
        "dagster_run_id": run_id,
        "champion": entries[0],
        "shadows": entries[1:],
    }
    path = manifest_path(published_dir, use_case)
    _write_atomically(path, json.dumps(manifest, indent=2, sort_keys=True))
    return path


@dataclass(frozen=True)
class ServedModel:
    """A verified model, ready to score: the artefact (features, offset, ...) and its booster."""

    artifact: ModelArtifact
    booster: lgb.Booster
    status: str

    @property
    def version(self) -> str:
        return self.artifact.model_version


def load_served_model(folder: Path, entry: dict, key: bytes) -> ServedModel:
    """Read and verify one model of the manifest against its checksums and its signature (HMAC with
    `key`); ArtifactIntegrityError or ArtifactTamperedError if anything does not match."""
    version = entry["model_version"]
    text = (folder / f"{version}.lgb.txt").read_text(encoding="utf-8")
    record = json.loads((folder / f"{version}.json").read_text(encoding="utf-8"))
    if record["sha256"] != entry["sha256"]:
        raise ArtifactIntegrityError(
            f"model {version}: the manifest records sha256 {entry['sha256']}, the model record {record['sha256']}"
        )
    record["model_text"] = text
    record["trained_at"] = datetime.fromisoformat(record["trained_at"])
    artifact = ModelArtifact.from_record(record)
    if not entry.get("signature"):
        raise ArtifactTamperedError(f"model {version}: the manifest carries no signature; refusing an unsigned model")
    artifact.verify()
    check_signature(key, version, artifact.model_text, artifact.calibration, entry["signature"])
    return ServedModel(artifact=artifact, booster=artifact.load_booster(), status=entry["status"])


def read_manifest(published_dir: Path, use_case: str) -> dict:
    return json.loads(manifest_path(published_dir, use_case).read_text(encoding="utf-8"))
