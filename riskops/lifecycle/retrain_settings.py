"""The `retrain:` section of configs/monitor.yaml: when and how a retraining run starts, on what data."""

from __future__ import annotations

from dataclasses import dataclass, field

from riskops.settings import from_dict

MODES = ("local", "cluster", "dry_run")


class RetrainError(RuntimeError):
    """Retraining cannot start: no or too little data."""


@dataclass
class RetrainSettings:
    """The `retrain:` section of configs/monitor.yaml."""

    enabled: bool = True
    mode: str = "local"  # local | cluster | dry_run
    host: str = ""  # KFP endpoint for mode: cluster
    profile: str = "dev"
    cooldown_seconds: float = 6 * 3600.0
    max_run_seconds: float = 6 * 3600.0  # a run older than this is declared dead (stale state)
    pipeline_args: list[str] = field(default_factory=list)  # extra `riskops pipeline run` flags
    cluster_parameters: dict = field(default_factory=dict)  # extra pipeline parameters for submit()
    cluster_input_path: str = ""  # path/URI the cluster reads train.parquet from; {run_id} is filled in
    command: list[str] = field(default_factory=list)  # override the local command ({python}, {input}, {run_dir})
    transactions_file: str = "data/recent_transactions.parquet"  # relative to the home folder
    history_file: str = ""  # older labelled transactions to train on as well (optional)
    holdout_fraction: float = 0.2
    unlabelled: str = "keep"  # keep: the file's own is_fraud (else 0); legit: 0; drop: only feedback rows
    min_rows: int = 2000
    min_frauds: int = 20
    # with history: the recent window's rows all train and the pipeline validates/tests on history
    # (`pipeline run --recent-from`); otherwise its newest rows would be validated on, not learned from
    train_on_recent: bool = True

    @classmethod
    def from_dict(cls, d: dict | None) -> RetrainSettings:
        s = from_dict(cls, d, "retrain")
        if s.mode not in MODES:
            raise ValueError(f"retrain.mode must be one of {MODES}, got {s.mode!r}")
        if s.mode == "cluster" and not s.host:
            raise ValueError("retrain.mode 'cluster' needs retrain.host (the KFP endpoint)")
        if s.unlabelled not in ("keep", "legit", "drop"):
            raise ValueError(f"retrain.unlabelled must be keep, legit or drop, got {s.unlabelled!r}")
        if not 0.0 <= s.holdout_fraction < 1.0:
            raise ValueError(f"retrain.holdout_fraction must be in [0, 1), got {s.holdout_fraction}")
        return s
