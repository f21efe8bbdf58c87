"""The generator's public functions: a frame of traffic, traffic with a drift, a world's product catalogue."""

from __future__ import annotations

import numpy as np
import pandas as pd

from riskops.data.generator.config import GeneratorConfig, default_days, parse_start, volume_factor
from riskops.data.generator.fraud import fraud_traffic
from riskops.data.generator.ids import hex_strings, mix_bits
from riskops.data.generator.legit import legit_traffic
from riskops.data.generator.segment import Segment
from riskops.data.generator.tables import DAY_NS, FX_PER_USD, SCENARIOS
from riskops.data.generator.world import World
from riskops.schema import (
    CHANNELS,
    COLUMNS,
    COUNTRIES,
    CURRENCIES,
    PAYMENT_METHODS,
    PRODUCT_CATEGORIES,
    coerce,
)


def to_usd(amount: pd.Series | np.ndarray, currency: pd.Series | np.ndarray) -> np.ndarray:
    """Convert order-currency amounts to USD with the generator's fixed rates."""
    rate = pd.Series(np.asarray(currency, dtype=object)).map(FX_PER_USD).to_numpy(dtype=float)
    return np.asarray(amount, dtype=float) / rate


def generate(config: GeneratorConfig) -> pd.DataFrame:
    """One frame of traffic under `config.scenario`, labelled, sorted by event time."""
    config.validate()
    world = World(config)
    start_ns = parse_start(config.start)
    days = default_days(config) / volume_factor(config.scenario) if config.days is None else config.days
    seg = Segment(world, config.scenario, start_ns, int(days * DAY_NS), config.rows, config.fraud_rate, 0)
    df = to_frame(run_segment(seg), world.key, 0)
    df.attrs["scenario"] = config.scenario
    return df


def product_catalogue(config: GeneratorConfig) -> pd.DataFrame:
    """Every merchant's products in the world of `config` (what a shop's product feed would list).

    Columns: merchant_id, merchant_category, product_title, product_category. A product that
    appears only with a drift scenario (the fraud ring's new merchant) is not in it: that world
    is built when the drift starts.
    """
    config.validate()
    w = World(config)
    m = w.p_merchant
    return pd.DataFrame(
        {
            "merchant_id": w.m_id[m],
            "merchant_category": w.m_label[m],
            "product_title": w.p_title,
            "product_category": np.array(PRODUCT_CATEGORIES, dtype=object)[w.p_cat],
        }
    )


def generate_with_drift(base: GeneratorConfig, scenario: str, drift_rows: int) -> pd.DataFrame:
    """`base` traffic followed in time by `drift_rows` rows of `scenario` traffic in the same world.

    The onset (first instant of the drifted segment) is in `df.attrs["drift_onset"]` (ISO string).
    """
    base.validate()
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; expected one of {', '.join(SCENARIOS)}")
    if drift_rows < 1:
        raise ValueError(f"drift_rows must be >= 1, got {drift_rows}")
    world = World(base)
    start_ns = parse_start(base.start)
    base_days = default_days(base) / volume_factor(base.scenario) if base.days is None else base.days
    base_span = int(base_days * DAY_NS)
    seg1 = Segment(world, base.scenario, start_ns, base_span, base.rows, base.fraud_rate, 0)
    cols1 = run_segment(seg1)
    rate_per_day = base.rows / base_days * volume_factor(scenario) / volume_factor(base.scenario)
    drift_span = int(max(drift_rows / rate_per_day, 1.0 / 24) * DAY_NS)
    onset_ns = start_ns + base_span
    seg2 = Segment(world, scenario, onset_ns, drift_span, drift_rows, base.fraud_rate, 1)
    cols2 = run_segment(seg2)
    merged = {k: np.concatenate([cols1[k], cols2[k]]) for k in cols1}
    df = to_frame(merged, world.key, 0)
    df.attrs["scenario"] = scenario
    df.attrs["drift_onset"] = pd.Timestamp(onset_ns, tz="UTC").isoformat()
    return df


def run_segment(seg: Segment) -> dict[str, np.ndarray]:
    """The segment's rows: its fraud episodes first (their count sets the legit rows), then legit traffic."""
    fraud = fraud_traffic(seg)
    n_legit = max(seg.rows - len(fraud["ts"]), 0)
    legit = legit_traffic(seg, n_legit)
    return {k: np.concatenate([legit[k], fraud[k]]) for k in legit}


def to_frame(cols: dict[str, np.ndarray], key: int, id_offset: int) -> pd.DataFrame:
    """Segment columns (indices into the schema's vocabularies) -> the schema's frame, sorted by time, with ids."""
    order = np.argsort(cols["ts"], kind="stable")
    n = len(order)
    data = {k: v[order] for k, v in cols.items()}
    tx = np.char.add("tx_", hex_strings(mix_bits(np.arange(id_offset, id_offset + n), key ^ 0x7E7E, 64), 16)).astype(object)
    lookup = {
        "currency": np.array(CURRENCIES, dtype=object),
        "payment_method": np.array(PAYMENT_METHODS, dtype=object),
        "billing_country": np.array(COUNTRIES, dtype=object),
        "shipping_country": np.array(COUNTRIES, dtype=object),
        "product_category": np.array(PRODUCT_CATEGORIES, dtype=object),
        "channel": np.array(CHANNELS, dtype=object),
    }
    frame = {"transaction_id": tx, "event_timestamp": pd.to_datetime(data["ts"], utc=True)}
    for c in COLUMNS[2:]:
        v = data[c]
        frame[c] = lookup[c][v] if c in lookup else v
    df = pd.DataFrame(frame, columns=list(COLUMNS))
    return coerce(df)
