"""Where the platform keeps its files: everything generated lives under MLOPS_HOME (default `var/`)."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"


@dataclass(frozen=True)
class Settings:
    home: Path
    duckdb_path: Path
    published_dir: Path
    incoming_dir: Path

    @classmethod
    def under(cls, home: Path) -> Settings:
        """Every path inside one folder (tests and benchmarks use a temporary one).

        The warehouse file name is fixed: dbt-duckdb names the catalog after the file ("warehouse"),
        and the dbt manifest Dagster reads records that name.
        """
        home = Path(home).resolve()
        return cls(home, home / "warehouse.duckdb", home / "published", home / "incoming")

    @classmethod
    def from_env(cls) -> Settings:
        settings = cls.under(Path(os.environ.get("MLOPS_HOME", PROJECT_ROOT / "var")))
        return replace(
            settings,
            published_dir=Path(os.environ.get("MLOPS_PUBLISHED_DIR", settings.published_dir)).resolve(),
            incoming_dir=Path(os.environ.get("MLOPS_INCOMING_DIR", settings.incoming_dir)).resolve(),
        )

    def prepare(self) -> None:
        self.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
        self.published_dir.mkdir(parents=True, exist_ok=True)
        self.incoming_dir.mkdir(parents=True, exist_ok=True)


def resolve_project_path(path: str | Path) -> Path:
    """Relative paths in use-case files are relative to the project root, not the working directory;
    `${MLOPS_HOME}` stands for the folder of generated files (see Settings)."""
    text = str(path)
    if "${MLOPS_HOME}" in text:
        text = text.replace("${MLOPS_HOME}", str(Settings.from_env().home))
    resolved = Path(text).expanduser()
    return resolved if resolved.is_absolute() else PROJECT_ROOT / resolved


@cache
def code_version() -> str:
    """The git commit of the code (with `-dirty` if tracked files changed), or MLOPS_CODE_VERSION."""
    if os.environ.get("MLOPS_CODE_VERSION"):
        return os.environ["MLOPS_CODE_VERSION"]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")
