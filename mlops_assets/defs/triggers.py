"""Which asset checks may start a retrain: declared on the check itself, in its spec's metadata.

The retraining sensor watches exactly the checks whose spec carries `mlops/requests_retrain: true`
(drift, realized performance). Data-quality checks declare `false`: broken data is stopped, and a
retrain would only see the last good data again.
"""

from __future__ import annotations

import dagster as dg

REQUESTS_RETRAIN = "mlops/requests_retrain"


def retrain_metadata(requests_retrain: bool) -> dict[str, bool]:
    return {REQUESTS_RETRAIN: requests_retrain}


def retrain_trigger_checks(definitions: list) -> list[dg.AssetCheckKey]:
    """The keys of the checks (among `definitions`) that declare they request a retrain when they fail."""
    return [
        spec.key
        for definition in definitions
        if isinstance(definition, dg.AssetsDefinition | dg.AssetChecksDefinition)
        for spec in definition.check_specs
        if (spec.metadata or {}).get(REQUESTS_RETRAIN) is True
    ]
