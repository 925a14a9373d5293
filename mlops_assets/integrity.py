"""Integrity of model artefacts against tampering, not only accidents.

The registry stores each model's LightGBM text with its sha256; that guards against corruption, but
anyone who can write the model table can change the text and recompute the sha256. So each model is
also signed when it is registered: an HMAC-SHA256 of its version and sha256, with a key the
warehouse does not hold, appended to `<use case>.model_signatures`. Scoring recomputes the sha256
of the text it is about to use and checks the signature: a changed artefact (even with its sha256
recomputed) is refused, an alert is raised, and the published scores of the last good model stay.

The key: `MLOPS_ARTIFACT_KEY` (hex or text) in production, from your secret store. Without it, a
random key is created on first use in `<MLOPS_HOME>/secrets/artifact-signing.key` (mode 0600) for
development: a writer of the warehouse who cannot read that file cannot forge a signature.
Hand-written (hmac from the standard library) because it is a dozen lines over hashlib.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from mlops_assets.ml.artifacts import artifact_sha256

KEY_ENVIRONMENT_VARIABLE = "MLOPS_ARTIFACT_KEY"
SIGNATURE_COLUMNS = "model_version varchar, sha256 varchar, signature varchar, signed_at timestamp"


class ArtifactTamperedError(RuntimeError):
    """A model artefact does not match its signature: changed after it was registered."""


def signing_key(home: Path, create: bool = True) -> bytes:
    """The HMAC key: the environment's, else the development key file (created on first use unless
    `create` is false: a reader such as the scoring service never makes up a key)."""
    configured = os.environ.get(KEY_ENVIRONMENT_VARIABLE)
    if configured:
        return configured.encode("utf-8")
    path = Path(home) / "secrets" / "artifact-signing.key"
    if not path.exists() and not create:
        raise ArtifactTamperedError(
            f"no artefact signing key: set {KEY_ENVIRONMENT_VARIABLE} (the pipeline's key) or provide {path}"
        )
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32))
    return path.read_text().strip().encode("utf-8")


def signature(key: bytes, model_version: str, sha256: str) -> str:
    return hmac.new(key, f"{model_version}\n{sha256}".encode(), hashlib.sha256).hexdigest()


def sign_model(connection: duckdb.DuckDBPyConnection, schema: str, model_version: str, sha256: str, key: bytes):
    """Append the model's signature (once per version; the first one counts)."""
    connection.execute(f"create table if not exists {schema}.model_signatures ({SIGNATURE_COLUMNS})")
    exists = connection.execute(
        f"select count(*) from {schema}.model_signatures where model_version = ?", [model_version]
    ).fetchall()[0][0]
    if not exists:
        connection.execute(
            f"insert into {schema}.model_signatures values (?, ?, ?, ?)",
            [model_version, sha256, signature(key, model_version, sha256), datetime.now(UTC).replace(tzinfo=None)],
        )


def verify_model(
    connection: duckdb.DuckDBPyConnection,
    schema: str,
    model_version: str,
    model_text: str,
    key: bytes,
    calibration: dict | None = None,
):
    """Raise ArtifactTamperedError unless the artefact's sha256 (text and calibration, as registered)
    carries the version's signature."""
    recorded = recorded_signature(connection, schema, model_version)
    if recorded is None:
        raise ArtifactTamperedError(
            f"model {model_version}: no signature in {schema}.model_signatures; refusing to score with an "
            "unsigned artefact"
        )
    check_signature(key, model_version, model_text, calibration, recorded)


def recorded_signature(connection: duckdb.DuckDBPyConnection, schema: str, model_version: str) -> str | None:
    """The signature recorded when the version was registered (the first one counts), if any."""
    rows = []
    with contextlib.suppress(duckdb.CatalogException):
        rows = connection.execute(
            f"select signature from {schema}.model_signatures where model_version = ? order by signed_at",
            [model_version],
        ).fetchall()
    return rows[0][0] if rows else None


def check_signature(key: bytes, model_version: str, model_text: str, calibration: dict | None, recorded: str):
    """Raise ArtifactTamperedError unless the artefact as it is now hashes to what `recorded` signed."""
    actual = artifact_sha256(model_text, calibration)
    if not hmac.compare_digest(recorded, signature(key, model_version, actual)):
        raise ArtifactTamperedError(
            f"model {model_version}: the artefact does not match the signature recorded when it was registered "
            f"(its text and calibration now hash to {actual}); it was changed afterwards. Refusing to score with "
            "it; the published scores stay those of the last good model. Restore the artefact or roll back."
        )
