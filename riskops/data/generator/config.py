"""The generator's configuration and the time span it implies.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from riskops.data.generator.tables import MIN_DAYS, ROWS_PER_DAY, SCENARIOS


@dataclass
class GeneratorConfig:
    """What to generate: how many rows, from which seed and start, how much fraud, under which scenario."""

    rows: int = 20_000
    seed: int = 7
    start: str = "2026-01-01"  # UTC start of the traffic
    days: float | None = None  # span; default derived from rows (~rows/2500 per day, min 7 days)
    fraud_rate: float = 0.015  # target share of fraud rows (0.005-0.03 realistic)
    n_users: int | None = None  # default derived from rows
    n_merchants: int | None = None
    scenario: str = "normal"  # one of SCENARIOS

    def validate(self) -> None:
        """Raise ValueError naming the field when a setting is out of range."""
        if self.rows < 1:
            raise ValueError(f"rows must be >= 1, got {self.rows}")
        if not 0.0 <= self.fraud_rate < 0.5:
            raise ValueError(f"fraud_rate must be in [0, 0.5), got {self.fraud_rate}")
        if self.scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {self.scenario!r}; expected one of {', '.join(SCENARIOS)}")
        if self.days is not None and self.days <= 0:
            raise ValueError(f"days must be > 0, got {self.days}")


def parse_start(start: str) -> int:
    """`start` as UTC epoch nanoseconds (a naive time is taken as UTC)."""
    ts = pd.Timestamp(start)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(ts.value)


def default_days(config: GeneratorConfig) -> float:
    """The traffic's span when `days` is not set: ~ROWS_PER_DAY rows a day, at least MIN_DAYS."""
    return max(MIN_DAYS, config.rows / ROWS_PER_DAY)


def volume_factor(scenario: str) -> float:
    """Traffic volume of a scenario relative to normal (a promotion season is busier)."""
    return 2.5 if scenario == "promotion_season" else 1.0
