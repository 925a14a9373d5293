"""What the service serves per use case, swapped whole when the pipeline publishes.

Two immutable snapshots per use case, each replaced by one reference assignment:
- `PublishedScores`: the published score file (`<published>/<use case>.duckdb`) read into memory. It
  is opened read-only, read completely and closed, so the service never holds a file the pipeline
  replaces, and a lookup reads one snapshot: every answer comes from one publication, never a mix;
- `ModelSet`: the champion and the shadow models of `<published>/models/<use case>/serving.json`,
  each verified against its sha256 before it is used.

A watcher thread checks the files' identity (inode, mtime, size) every `interval` seconds and loads a
changed file beside the current snapshot, then swaps; requests keep using the snapshot they started
with, so nothing fails or waits during a swap. A model whose checksum does not match is refused with an
alert, and the previous models keep serving.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import duckdb
import numpy as np

from mlops_assets.integrity import ArtifactTamperedError, signing_key
from mlops_assets.ml.artifacts import ArtifactIntegrityError
from mlops_assets.serving.artefacts import ServedModel, load_served_model, manifest_path, models_dir, read_manifest
from mlops_assets.serving.records import raise_alert

logger = logging.getLogger("mlops.serving")


def _identity(path: Path) -> tuple | None:
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size)


@dataclass(frozen=True)
class PublishedScores:
    identity: tuple
    model_version: str
    published_at: datetime
    scored_at: datetime
    customers: int
    positions: dict[str, int]
    columns: dict[str, np.ndarray]

    @classmethod
    def read(cls, path: Path, identity: tuple) -> PublishedScores:
        with duckdb.connect(str(path), read_only=True) as connection:
            publication = connection.execute(
                "select model_version, published_at, scored_at, customers from publication"
            ).fetchall()[0]
            table = connection.execute("select * from customer_scores").fetchdf()
        columns = {name: table[name].to_numpy(dtype=object) for name in table.columns}
        positions = {customer_id: i for i, customer_id in enumerate(columns["customer_id"])}
        return cls(identity, publication[0], publication[1], publication[2], publication[3], positions, columns)

    def row(self, customer_id: str) -> dict | None:
        position = self.positions.get(customer_id)
        if position is None:
            return None
        return {name: values[position] for name, values in self.columns.items()}


@dataclass(frozen=True)
class ModelSet:
    identity: tuple
    champion: ServedModel
    shadows: tuple[ServedModel, ...]
    exported_at: str

    @property
    def challenger(self) -> ServedModel | None:
        """The model a canary share is answered by: the newest shadow model."""
        return self.shadows[-1] if self.shadows else None


@dataclass
class ServedUseCase:
    """The current snapshots of one use case (read by requests, replaced by the watcher)."""

    name: str
    scores: PublishedScores | None = None
    models: ModelSet | None = None
    refused: dict[str, str] = field(default_factory=dict)  # version -> why, for the use-case listing

    @property
    def ready(self) -> bool:
        return self.scores is not None and self.models is not None


class Watcher:
    """Keeps every ServedUseCase in step with the published folder."""

    def __init__(self, home: Path, published_dir: Path, use_cases: dict[str, ServedUseCase], interval: float):
        self.home = Path(home)
        self.published_dir = Path(published_dir)
        self.use_cases = use_cases
        self.interval = interval
        self.on_swap = lambda use_case, kind, version: None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._refused_identities: dict[str, tuple] = {}

    def refresh(self) -> None:
        for served in self.use_cases.values():
            self._refresh_scores(served)
            self._refresh_models(served)

    def _refresh_scores(self, served: ServedUseCase) -> None:
        path = self.published_dir / f"{served.name}.duckdb"
        identity = _identity(path)
        if identity is None or (served.scores is not None and served.scores.identity == identity):
            return
        try:
            snapshot = PublishedScores.read(path, identity)
        except (duckdb.Error, IndexError) as error:  # e.g. an unreadable file: keep the last good one
            logger.warning("%s: cannot read published scores %s: %s", served.name, path, error)
            return
        served.scores = snapshot
        self.on_swap(served.name, "scores", snapshot.model_version)
        logger.info(
            "%s: serving published scores of %s (%d customers)", served.name, snapshot.model_version, snapshot.customers
        )

    def _models_identity(self, use_case: str) -> tuple | None:
        manifest = manifest_path(self.published_dir, use_case)
        identity = _identity(manifest)
        if identity is None:
            return None
        try:
            entries = self._entries(read_manifest(self.published_dir, use_case))
        except (OSError, ValueError, KeyError):
            return identity
        folder = models_dir(self.published_dir, use_case)
        files = [folder / f"{e['model_version']}{suffix}" for e in entries for suffix in (".lgb.txt", ".json")]
        return (identity, *(_identity(f) for f in files))

    @staticmethod
    def _entries(manifest: dict) -> list[dict]:
        return [manifest["champion"], *manifest.get("shadows", [])]

    def _refresh_models(self, served: ServedUseCase) -> None:
        identity = self._models_identity(served.name)
        current = served.models
        if identity is None or (current is not None and current.identity == identity):
            return
        if self._refused_identities.get(served.name) == identity:
            return  # refused already (alerted once); wait for the next publication
        folder = models_dir(self.published_dir, served.name)
        try:
            manifest = read_manifest(self.published_dir, served.name)
        except (OSError, ValueError) as error:
            logger.warning("%s: cannot read the model manifest: %s", served.name, error)
            return
        loaded = {} if current is None else {m.version: m for m in (current.champion, *current.shadows)}
        models, refused = [], {}
        for entry in self._entries(manifest):
            try:
                model = load_served_model(folder, entry, signing_key(self.home, create=False))
            except (ArtifactIntegrityError, ArtifactTamperedError, OSError, ValueError, KeyError) as error:
                refused[entry["model_version"]] = str(error)
                model = None
            previous = loaded.get(entry["model_version"])
            if model is None and previous is not None and previous.artifact.sha256 == entry["sha256"]:
                model = previous  # the verified copy in memory; the file changed after it was loaded
            models.append(model)
        served.refused = refused
        for version, reason in refused.items():
            raise_alert(
                self.home,
                served.name,
                "artefact_refused",
                f"model {version} refused by the scoring service: {reason}",
                {"model_version": version, "kept_champion": current.champion.version if current else None},
                event=f"{served.name} artefact_refused {version} {identity}",
            )
        champion = models[0]
        if champion is None:
            self._refused_identities[served.name] = identity
            if current is not None:
                # Keep the old champion, drop shadows whose files failed too.
                served.models = ModelSet(current.identity, current.champion, current.shadows, current.exported_at)
            return
        self._refused_identities.pop(served.name, None)
        served.models = ModelSet(
            identity, champion, tuple(m for m in models[1:] if m is not None), manifest["exported_at"]
        )
        if current is None or current.champion.version != champion.version:
            logger.info("%s: champion %s now serving", served.name, champion.version)
        self.on_swap(served.name, "models", champion.version)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.refresh()
            except Exception:  # the watcher must outlive any single bad file
                logger.exception("watcher: refresh failed")

    def start(self) -> None:
        self.refresh()
        self._thread = threading.Thread(target=self._run, name="published-files-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def frame_reasons(row: dict, k: int) -> list[dict]:
    """The published reasons of one score row as a list (empty for customers outside the explained share)."""
    reasons = []
    for i in range(1, k + 1):
        feature = row.get(f"reason_{i}_feature")
        if feature is None or (isinstance(feature, float) and np.isnan(feature)):
            continue
        reasons.append(
            {
                "feature": feature,
                "label": row.get(f"reason_{i}"),
                "value": row.get(f"reason_{i}_value"),
                "contribution": float(row.get(f"reason_{i}_contribution")),
            }
        )
    return reasons
