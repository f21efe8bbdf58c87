"""How many rows of each class a training epoch reads: every fraud, and enough legitimate rows.

Frauds and legitimate rows are counted separately, so a fraud-heavy dataset cannot crowd out the
legitimate rows (counting both against one budget once left a real dataset with thousands of frauds
~1,000 legitimate rows per epoch, and the FT-Transformer at 0.45x LightGBM's PR-AUC). Used by the
bring-your-own-data training (riskops.byod.train) for both of its models.
"""

from __future__ import annotations

from dataclasses import dataclass

# Per-epoch sample budget (epoch_sample): at least LEGIT_PER_FRAUD legitimate rows per fraud, and at
# least MIN_LEGIT_PER_EPOCH (on ULB, ~20,000 per epoch tested as well as 60,000, docs/quality.md;
# ~1,000 per epoch against thousands of frauds gave 0.45x LightGBM's PR-AUC), frauds capped at
# MAX_FRAUDS_PER_EPOCH so one epoch stays a few hundred thousand rows at most.
LEGIT_PER_FRAUD = 20
MIN_LEGIT_PER_EPOCH = 20_000
MAX_FRAUDS_PER_EPOCH = 20_000


@dataclass(frozen=True)
class EpochSample:
    """How many rows of each class one epoch trains on, out of how many there are."""

    frauds: int
    total_frauds: int
    legit: int
    total_legit: int

    def describe(self, unit: str = "per epoch") -> str:
        """e.g. ``trained on 1,112 frauds + 40,000 of 65,000 legitimate rows per epoch``."""
        frauds = (
            f"{self.frauds:,}"
            if self.frauds == self.total_frauds
            else f"{self.frauds:,} of {self.total_frauds:,}"
        )
        return f"trained on {frauds} frauds + {self.legit:,} of {self.total_legit:,} legitimate rows {unit}"


def epoch_sample(n_fraud: int, n_legit: int, min_legit: int | None = 0) -> EpochSample:
    """The per-epoch budget: every fraud (up to MAX_FRAUDS_PER_EPOCH) and legitimate rows numbering
    the largest of ``min_legit``, MIN_LEGIT_PER_EPOCH and LEGIT_PER_FRAUD per fraud, capped by the
    data. Frauds and legitimate rows are counted separately, so a fraud-heavy dataset cannot crowd
    out the legitimate rows. ``min_legit`` None or 0: every row of both classes.
    """
    if not min_legit:
        return EpochSample(n_fraud, n_fraud, n_legit, n_legit)
    frauds = min(n_fraud, MAX_FRAUDS_PER_EPOCH)
    legit = min(n_legit, max(int(min_legit), MIN_LEGIT_PER_EPOCH, LEGIT_PER_FRAUD * frauds))
    return EpochSample(frauds, n_fraud, legit, n_legit)
