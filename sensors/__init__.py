"""Sensors of the platform: new files arriving, failed checks that call for retraining, freshness.

`build_use_case_sensors` returns a use case's sensors; `mlops_assets.definitions` registers them.
"""

from sensors.incoming import build_incoming_files_sensor
from sensors.recovery import build_run_recovery_sensor
from sensors.retraining import RETRAIN_TAG, build_retraining_sensor

__all__ = ["RETRAIN_TAG", "build_incoming_files_sensor", "build_retraining_sensor", "build_run_recovery_sensor"]
