"""Transactions built for tests: small, seeded, with a known (planted) fraud signal.

- `planted_signal_transactions`: schema columns + one entity feature; frauds burst (training tests).
- `synthetic_transactions`: schema columns + every entity feature; several planted signals (evaluation).
- `shop_orders` / `shop_config`: a shop's own CSV export and its dataset mapping (bring your own data).
- `FakeScorer`: a fixed function of the model frame standing in for a trained model.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from riskops.schema import CHANNELS, COUNTRIES, CURRENCIES, PAYMENT_METHODS, PRODUCT_CATEGORIES

SIGNAL = "user_txn_count_1h"


def planted_signal_transactions(
    n: int, seed: int, fraud_rate: float = 0.1, varied: bool = False
) -> pd.DataFrame:
    """Transactions (schema columns + one entity feature) with a planted fraud signal: frauds have
    more transactions in the last hour (Poisson 4 vs 0.5), everything else is noise. `varied`:
    time-sorted rows and more distinct countries, payment methods, categories and merchants."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < fraud_rate).astype(int)
    seconds = rng.integers(0, 60 * 86400, n)
    ts = pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(
        np.sort(seconds) if varied else seconds, unit="s"
    )
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
            "merchant_category": rng.choice(["electronics", "fashion", "home"], n)
            if varied
            else "general store",
            SIGNAL: np.where(y == 1, rng.poisson(4.0, n), rng.poisson(0.5, n)).astype(float),
            "is_fraud": y,
        }
    )


def synthetic_transactions(n: int, seed: int = 0, fraud_rate: float = 0.06) -> pd.DataFrame:
    """Transactions + entity features with a planted signal.

    Each fraud shows a random subset of: amount far above the user's history, new device + new IP,
    billing/shipping mismatch, many accounts per device/IP, a brand-new account. Legit rows show
    each of these rarely. Nothing in the text differs between the classes.
    """
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < fraud_rate).astype(int)
    ts = pd.Timestamp("2024-03-01", tz="UTC") + pd.to_timedelta(
        np.sort(rng.uniform(0, 30 * 86400, n)), unit="s"
    )

    def planted(p_fraud: float, p_legit: float) -> np.ndarray:
        return np.where(y == 1, rng.random(n) < p_fraud, rng.random(n) < p_legit)

    user_mean = rng.lognormal(3.5, 0.6, n)
    amount = user_mean * rng.lognormal(0, 0.3, n)
    big, new_dev, mismatch = planted(0.5, 0.03), planted(0.5, 0.06), planted(0.45, 0.04)
    farm, young = planted(0.35, 0.02), planted(0.3, 0.05)
    amount = np.where(big, amount * rng.uniform(4, 15, n), amount)
    billing = rng.choice(COUNTRIES[:8], n)
    return pd.DataFrame(
        {
            "transaction_id": [f"t{i:06d}" for i in range(n)],
            "event_timestamp": ts,
            "amount": amount.round(2),
            "quantity": rng.integers(1, 4, n),
            "account_age_days": np.where(young, rng.integers(0, 5, n), rng.integers(30, 2000, n)),
            "is_refund": rng.random(n) < 0.03,
            "billing_country": billing,
            "shipping_country": np.where(mismatch, rng.choice(COUNTRIES[12:], n), billing),
            "currency": rng.choice(CURRENCIES, n),
            "payment_method": rng.choice(PAYMENT_METHODS[:7], n),
            "channel": rng.choice(CHANNELS, n),
            "product_category": rng.choice(PRODUCT_CATEGORIES, n),
            "product_title": "Widget",
            "merchant_category": "general",
            "user_amount_mean_30d": user_mean,
            "user_amount_std_30d": user_mean * 0.3,
            "user_last_event_epoch": ts.astype("int64") / 1e9 - rng.uniform(3600, 5 * 86400, n),
            "user_txn_count_1h": rng.poisson(0.2, n),
            "user_txn_count_24h": rng.poisson(1.5, n),
            "device_txn_count_24h": np.where(new_dev, 0, rng.integers(1, 5, n)),
            "device_distinct_users_7d": np.where(new_dev, 0, 1),
            "ip_txn_count_24h": np.where(new_dev, 0, rng.integers(1, 5, n)),
            "device_distinct_users_24h": np.where(farm, rng.integers(3, 8, n), 1),
            "ip_distinct_users_24h": np.where(farm, rng.integers(5, 12, n), 1),
            "merchant_amount_mean_30d": 60.0,
            "merchant_amount_std_30d": 40.0,
            "is_fraud": y,
        }
    )


TITLES_LEGIT = ["wireless mouse", "running shoes", "coffee beans 1kg", "paperback novel", "garden hose",
                "yoga mat", "desk lamp", "phone case"]  # fmt: skip
TITLES_FRAUD = ["gift card 500", "gaming laptop pro", "prepaid voucher bundle"]


def shop_orders(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    """A shop's own export: its own names, ISO time strings, PII, bursts of fraud by a few accounts."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2025-03-01T00:00:00Z")
    t = np.sort(rng.uniform(0, 30 * 86400, n))
    fraud = rng.random(n) < 0.06
    customers = np.where(fraud, rng.integers(0, 25, n), rng.integers(25, 600, n))
    # fraudsters place bursts: pull each fraud close to the previous fraud of the same account
    last: dict[int, float] = {}
    for i in np.flatnonzero(fraud):
        c = int(customers[i])
        if c in last and rng.random() < 0.7:
            t[i] = last[c] + rng.uniform(30, 900)
        last[c] = t[i]
    total = np.round(np.exp(rng.normal(3.5, 0.8, n)) * np.where(fraud, rng.uniform(2, 6, n), 1.0), 2)
    pay = np.where(fraud & (rng.random(n) < 0.5), "crypto", rng.choice(["card", "paypal", "bank", "crypto"], n,
                                                                       p=[0.6, 0.25, 0.13, 0.02]))  # fmt: skip
    titles = np.where(fraud & (rng.random(n) < 0.6), rng.choice(TITLES_FRAUD, n), rng.choice(TITLES_LEGIT, n))
    df = pd.DataFrame(
        {
            "order_ts": (start + pd.to_timedelta(t, unit="s")).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "chargeback": fraud.astype(int),
            "customer": [f"cust-{c}" for c in customers],
            "device_fp": [
                f"dev-{c % 400 if not f else 900 + c % 5}" for c, f in zip(customers, fraud, strict=True)
            ],
            "client_ip": [f"10.0.{c % 50}.{c % 200}" for c in customers],
            "email": [f"user{c}@example.com" for c in customers],
            "order_total": total,
            "items": rng.integers(1, 5, n),
            "pay_method": pay,
            "country": rng.choice(["DE", "FR", "NL", "US"], n),
            "item_title": titles,
        }
    )
    return df.sample(frac=1.0, random_state=seed).reset_index(drop=True)  # exports are not time ordered


def shop_config(path, **overrides) -> dict:
    """The dataset config (riskops.data.datasets) mapping `shop_orders` saved at `path`."""
    cfg = {
        "name": "my-shop",
        "source": {"path": str(path)},
        "event_time": "order_ts",
        "label": "chargeback",
        "entities": {"user": "customer", "device": "device_fp", "ip": "client_ip"},
        "amount": "order_total",
        "numeric": ["order_total", "items"],
        "categorical": ["pay_method", "country"],
        "text": ["item_title"],
        "pii": ["client_ip", "email"],
        "split": {"time_fraction": 0.75, "val_fraction": 0.25},
    }
    cfg.update(overrides)
    return cfg


class FakeScorer:
    """Stands in for riskops.training.scorer.RiskScorer: a fixed function of the model frame."""

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        z = (
            1.5 * frame["amount_zscore_user"].clip(0, 5)
            + 2.0 * frame["country_mismatch"]
            + 2.0 * frame["device_is_new"]
            + 0.5 * frame["device_distinct_users_24h"]
            - 5.0
        )
        p = 1 / (1 + np.exp(-z.to_numpy()))
        return np.column_stack([1 - p, p])  # (n, 2) like sklearn; (n,) works too
