"""The `drift:` section of configs/monitor.yaml: what the drift comparison monitors and how.

Read by `riskops.monitoring.drift` (the comparison), `riskops.monitoring.drift_thresholds` (the
self-calibrated thresholds) and `riskops.monitoring.performance` (the labelled-window check).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from riskops.features.contract import CATEGORICAL_FEATURES, NUMERIC_FEATURES
from riskops.settings import from_dict

# the calendar is a stratum of the comparison, not a monitored input (see riskops.monitoring.reference)
DEFAULT_EXCLUDE: tuple[str, ...] = ("is_weekend",)


@dataclass
class DriftSettings:
    """The `drift:` section of configs/monitor.yaml."""

    features: list[str] | None = None  # None = NUMERIC_FEATURES + CATEGORICAL_FEATURES
    exclude: list[str] = field(default_factory=lambda: list(DEFAULT_EXCLUDE))
    num_method: str = "wasserstein"  # normed Wasserstein distance (Evidently); floor threshold below
    num_threshold: float = 0.12
    cat_method: str = "jensenshannon"
    cat_threshold: float = 0.12
    score_method: str = "ks"  # p-value of the score distribution shift (reported, used with the effect size)
    score_threshold: float = 0.01
    score_effect_threshold: float = 0.1  # floor of the score's normed Wasserstein threshold
    flag_log2_threshold: float = 1.0  # floor of the |log2 ratio| threshold of the review+block rate
    calibrate: bool = True  # per-feature thresholds from the reference's own natural drift
    calibration_margin: float = 1.5
    volatile_weight: float = 0.5  # weight of a drifted "volatile" input in feature_drift.weighted_count
    calibration_stride: float = 0.5  # step between calibration windows, as a fraction of the window
    window_size: int = 1500  # the monitor's window: the calibration measures natural drift at this size
    match_hours: bool = True
    clip_quantile: float = 0.005  # numerics winsorised at the reference's q / 1-q quantiles (0 = off)
    reference_ratio: float = 3.0  # reference rows per current row after matching
    max_reference_rows: int = 6000
    seed: int = 0
    # "evidently": the numbers come from the Evidently report (also saved as HTML/JSON);
    # "fast": the same formulas in numpy/scipy, no report (sweeps, tests, calibration)
    engine: str = "evidently"
    performance_min_rows: int = 300  # below this no performance report is rendered
    bootstrap: int = 200
    html: bool = True

    @classmethod
    def from_dict(cls, d: dict | None) -> DriftSettings:
        return from_dict(cls, d, "drift")

    def __post_init__(self) -> None:
        if self.engine not in ("evidently", "fast"):
            raise ValueError(f"drift.engine must be 'evidently' or 'fast', got {self.engine!r}")

    def monitored(self) -> list[str]:
        cols = list(self.features) if self.features else [*NUMERIC_FEATURES, *CATEGORICAL_FEATURES]
        bad = [c for c in cols if c not in NUMERIC_FEATURES and c not in CATEGORICAL_FEATURES]
        if bad:
            raise ValueError(f"drift.features: {bad} are not model inputs (riskops.features.contract)")
        return [c for c in cols if c not in set(self.exclude)]
