"""The dbt manifest Dagster reads, refreshed when the dbt project changed since it was written.

Dagster builds its dbt assets from `dbt_project/target/manifest.json`; a new or edited model, seed
or macro is invisible until dbt parses the project again. Commands and the code location call
`ensure_fresh_manifest` first: it regenerates the generated files of use cases whose YAML changed
(onboarding.refresh_generated_dbt_files), then runs `dbt parse` when any file or folder of the dbt
project is newer than the manifest (a deleted file changes its folder's time). The check costs a
walk over the project's files (a few milliseconds); a parse about 10-20 s.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mlops_assets.settings import DBT_PROJECT_DIR, PROJECT_ROOT

WATCHED = ("models", "seeds", "macros")


def _newest_change(project_dir: Path) -> float:
    newest = max((project_dir / name).stat().st_mtime for name in ("dbt_project.yml", "profiles.yml"))
    for folder in WATCHED:
        for directory, _, files in os.walk(project_dir / folder):
            newest = max(newest, Path(directory).stat().st_mtime)
            for name in files:
                newest = max(newest, (Path(directory) / name).stat().st_mtime)
    return newest


def manifest_is_stale(project_dir: Path = DBT_PROJECT_DIR) -> bool:
    manifest = project_dir / "target" / "manifest.json"
    return not manifest.exists() or _newest_change(project_dir) > manifest.stat().st_mtime


def ensure_fresh_manifest(project_root: Path = PROJECT_ROOT) -> bool:
    """Regenerate stale generated files, then `dbt parse` if the manifest is older than the project.
    True when it parsed; raises RuntimeError with dbt's output when the parse fails."""
    from mlops_assets.onboarding import refresh_generated_dbt_files

    project_dir = project_root / DBT_PROJECT_DIR.relative_to(PROJECT_ROOT)
    refresh_generated_dbt_files(project_root)
    if not manifest_is_stale(project_dir):
        return False
    completed = subprocess.run(
        [str(Path(sys.executable).with_name("dbt")), "parse", "--quiet"],
        cwd=project_dir,
        capture_output=True,
        text=True,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"dbt parse of {project_dir} failed:\n{completed.stdout}{completed.stderr}")
    return True
