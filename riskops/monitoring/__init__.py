"""Production monitoring: drift (Evidently), volume anomalies, decision rules, the monitor loop.

* `riskops.monitoring.drift`   — the reference captured next to each model, the current window
  from the prediction log, Evidently drift/performance reports;
* `riskops.monitoring.volume`  — hourly volume anomalies against a robust seasonal baseline;
* `riskops.monitoring.rules`   — configurable rules turning metrics into a verdict;
* `riskops.monitoring.monitor` — `run_monitor_once` / `run_monitor_loop` (reports, alerts, retraining).

Heavy libraries (Evidently, pandas) are imported by the submodules, not here, so importing the
package is cheap (the server imports `riskops.lifecycle.promotion` / `riskops.monitoring.feedback`, never these).
"""

from __future__ import annotations

__all__ = ["drift", "monitor", "rules", "volume"]
