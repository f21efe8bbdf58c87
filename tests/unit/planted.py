"""Small hand-made training data shared by the training tests (importable: tests/ is on sys.path)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from riskops.schema import CHANNELS, PAYMENT_METHODS, PRODUCT_CATEGORIES

SIGNAL = "user_txn_count_1h"


def planted_signal_transactions(n: int, seed: int, fraud_rate: float = 0.1, varied: bool = False) -> pd.DataFrame:
    """Transactions (schema columns + one entity feature) with a planted fraud signal: frauds have
    more transactions in the last hour (Poisson 4 vs 0.5), everything else is noise. `varied`:
    time-sorted rows and more distinct countries, payment methods, categories and merchants."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < fraud_rate).astype(int)
    seconds = rng.integers(0, 60 * 86400, n)
    ts = pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(np.sort(seconds) if varied else seconds, unit="s")
    titles = ["Wireless earbuds", "Running shoes", "Coffee maker", "Gift card 100", "Yoga mat", "Phone case"]
    countries = ["US", "GB", "DE"] if varied else ["US", "GB"]
    return pd.DataFrame(
        {
            "transaction_id": [f"t{i:06d}" for i in range(n)],
            "event_timestamp": ts,
            "amount": rng.lognormal(3.5, 1.0, n).round(2),
            "quantity": rng.integers(1, 4, n),
            "account_age_days": rng.integers(0, 2000, n),
            "is_refund": rng.random(n) < 0.05,
            "billing_country": rng.choice(countries, n),
            "shipping_country": rng.choice(countries, n) if varied else "US",
            "payment_method": rng.choice(PAYMENT_METHODS[: 5 if varied else 3], n),
            "channel": rng.choice(CHANNELS, n),
            "product_category": rng.choice(PRODUCT_CATEGORIES[: 6 if varied else 4], n),
            "currency": rng.choice(["USD", "EUR"], n),
            "product_title": rng.choice(titles, n),
            "merchant_category": rng.choice(["electronics", "fashion", "home"], n) if varied else "general store",
            SIGNAL: np.where(y == 1, rng.poisson(4.0, n), rng.poisson(0.5, n)).astype(float),
            "is_fraud": y,
        }
    )
