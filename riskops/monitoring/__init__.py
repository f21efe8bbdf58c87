"""Production monitoring: drift (Evidently), volume anomalies, decision rules -> a verdict.

* `riskops.monitoring.reference`   — the reference captured next to each model; the current window
  from the prediction log (`riskops.monitoring.prediction_log`: a local folder of segments, or
  their Parquet copies shipped to object storage, `riskops.monitoring.log_store`); hour-of-day matching;
* `riskops.monitoring.drift`       — the comparison (Evidently report) and its flat metrics, with
  `drift_settings` (the `drift:` section), `calibration` (self-calibrated thresholds) and
  `performance` (the labelled window);
* `riskops.monitoring.volume`      — hourly volume anomalies against a robust seasonal baseline;
* `riskops.monitoring.rules`       — configurable rules turning metrics into a verdict;
* `riskops.monitoring.feedback`    — confirmed labels (chargebacks, reviews) joined on transaction_id;
* `riskops.monitoring.alerts`      — alert events (JSONL + webhook);
* `riskops.monitoring.monitor`     — `run_monitor_once`: one pass -> reports, verdict, alerts.

The monitor reports a verdict; acting on it (retraining, the promotion gate) is the lifecycle's
(`riskops.lifecycle.loop`), which imports this package, never the reverse.

Heavy libraries (Evidently, pandas) are imported by the submodules, not here, so importing the
package is cheap (the server imports `riskops.monitoring.feedback`, never the monitor).
"""

from __future__ import annotations
