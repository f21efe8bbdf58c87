"""A segment: a stretch of traffic under one scenario, and what its legit and fraud traffic draw from.

The random draws of a segment come from its own generator, seeded by (world seed, segment index,
scenario): the order of the draws is part of the output, so the same seed gives the same rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from riskops.data.generator.product_templates import PROMO_WORDS
from riskops.data.generator.tables import (
    BASE_PM_P,
    CATEGORY_INDEX,
    COUNTRY_UTC,
    DAY_NS,
    FRAUDSTER_C,
    FRAUDSTER_P,
    FX_PER_USD,
    HOUR_NS,
    HOUR_P,
    MS_NS,
    PAYMENT_INDEX,
    SCENARIOS,
    VICTIM_C,
    VICTIM_P,
    WEEK_W,
)
from riskops.data.generator.world import World, hosting_ips, residential_ips
from riskops.schema import CURRENCIES, PRODUCT_CATEGORIES


def round_money(x: np.ndarray, currency_idx: np.ndarray) -> np.ndarray:
    """Amounts rounded as the currency is paid: cents, whole yen, never below the smallest unit."""
    whole = np.isin(currency_idx, [CURRENCIES.index("JPY")])
    out = np.round(x, 2)
    out[whole] = np.maximum(np.round(x[whole]), 1.0)
    return np.maximum(out, 0.01)


class Segment:
    """A stretch of traffic [start, start+span) under one scenario."""

    def __init__(self, world: World, scenario: str, start_ns: int, span_ns: int, rows: int, fraud_rate: float,
                 index: int):
        self.w = world
        self.scenario = scenario
        self.start = int(start_ns)
        self.span = max(int(span_ns), HOUR_NS)
        self.end = self.start + self.span
        self.rows = int(rows)
        self.fraud_rate = float(fraud_rate)
        self.rng = np.random.default_rng([world.config.seed, 2, index, SCENARIOS.index(scenario)])
        rng = self.rng
        self.ring_merchant = -1
        if scenario == "fraud_ring":
            self.ring_merchant = world.add_ring_merchant(rng)
        if scenario == "promotion_season":
            n_new = max(20, len(world.users["id"]) // 4)
            world.add_users(rng, n_new, self.start, self.span, new_share=1.0, activity_boost=1.5)
        n_p = len(world.p_title)
        self.price_mult = np.ones(n_p)
        if scenario == "price_shift":
            factor = rng.uniform(1.3, 1.5, len(PRODUCT_CATEGORIES))
            self.price_mult = factor[world.p_cat]
        self.pm = world.users["pm"].copy()
        if scenario == "new_payment_method":
            r = rng.random(len(self.pm))
            self.pm[r < 0.16] = PAYMENT_INDEX["bnpl"]
            self.pm[(r >= 0.16) & (r < 0.22)] = PAYMENT_INDEX["crypto"]
        self.pm_p = BASE_PM_P.copy()
        if scenario == "new_payment_method":
            self.pm_p[PAYMENT_INDEX["bnpl"]] = 0.2
            self.pm_p[PAYMENT_INDEX["crypto"]] = 0.1
            self.pm_p /= self.pm_p.sum()

    # -- shared helpers ----------------------------------------------------------------------------
    def times(self, n: int, utc_offset_h: np.ndarray, hour_p: np.ndarray = HOUR_P) -> np.ndarray:
        """Event times with weekly and daily (local time) seasonality inside the segment."""
        rng = self.rng
        offset = np.broadcast_to(np.asarray(utc_offset_h, dtype=float), (n,))
        day0 = (self.start // DAY_NS - 1) * DAY_NS
        ndays = int(np.ceil((self.end - day0) / DAY_NS)) + 1
        dow = (pd.Timestamp(day0, tz="UTC").dayofweek + np.arange(ndays)) % 7
        wp = WEEK_W[dow] / WEEK_W[dow].sum()
        out = np.empty(n, dtype=np.int64)
        todo = np.arange(n)
        for _ in range(50):  # rejection sampling: keep the draws that fall inside the segment
            k = len(todo)
            d = rng.choice(ndays, size=k, p=wp)
            h = rng.choice(24, size=k, p=hour_p)
            t = day0 + d * DAY_NS + h * HOUR_NS + (rng.random(k) * HOUR_NS).astype(np.int64)
            t -= (offset[todo] * HOUR_NS).astype(np.int64)
            ok = (t >= self.start) & (t < self.end)
            out[todo[ok]] = t[ok]
            todo = todo[~ok]
            if not len(todo):
                break
        if len(todo):  # very short segments: uniform
            out[todo] = self.start + (rng.random(len(todo)) * self.span).astype(np.int64)
        return (out // MS_NS) * MS_NS

    def title_price(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Titles and USD unit prices of products `p` as sold in this segment."""
        w = self.w
        titles = w.p_title[p]
        price = w.p_price[p] * self.price_mult[p]
        if self.scenario == "promotion_season":
            rng = self.rng
            n = len(p)
            promo = rng.random(n) < 0.6
            disc = rng.choice(np.array([10, 15, 20, 25, 30, 40]), size=n)
            style = rng.integers(0, len(PROMO_WORDS) + 1, n)  # the extra style: "-NN%" suffix
            pre = np.array([s[0] for s in PROMO_WORDS] + [""], dtype=object)[style]
            suf = np.array([s[1] for s in PROMO_WORDS] + [""], dtype=object)[style]
            pct = np.char.add(np.char.add(" -", disc.astype(str)), "%").astype(object)
            suf = np.where(style == len(PROMO_WORDS), pct, suf)
            new = pre + titles.astype(object) + suf
            titles = np.where(promo, new, titles)
            price = np.where(promo, price * (1 - disc / 100.0), price)
        return titles.astype(object), price

    def amounts(self, unit_usd: np.ndarray, qty: np.ndarray, cur: np.ndarray) -> np.ndarray:
        """Order amounts in the order currency: unit price x quantity, converted, plus tax/shipping."""
        fx = np.array([FX_PER_USD[c] for c in CURRENCIES])[cur]
        extra = np.exp(np.abs(self.rng.normal(0.0, 0.04, len(qty))))  # tax/shipping
        return round_money(unit_usd * qty * fx * extra, cur)


    # -- what fraud episodes draw (riskops.data.generator.fraud) -----------------------------------------------------------------------------
    def t0(self, duration_ns: int) -> int:
        """Start of a fraud episode: fraudsters keep their own (local) hours half of the time."""
        latest = max(self.end - duration_ns - MS_NS, self.start)
        if self.rng.random() < 0.5:
            t = int(self.times(1, np.array([COUNTRY_UTC[self.fraud_country()]]))[0])
            if t <= latest:
                return t
        return int(self.rng.integers(self.start, latest + 1))

    def pick_products(self, n: int, cats: tuple[str, ...] | None = None, min_usd: float = 0.0,
                      max_usd: float = np.inf, hot_power: float = 2.0, hot_share: float = 0.75,
                      ring: bool = False) -> np.ndarray:
        """Products a fraudster picks: mostly resellable ("hot") ones, some ordinary ones as cover."""
        w, rng = self.w, self.rng
        ok = (w.p_price * self.price_mult >= min_usd) & (w.p_price * self.price_mult <= max_usd)
        ok &= w.p_ring == ring
        if cats is not None:
            ok &= np.isin(w.p_cat, [CATEGORY_INDEX[c] for c in cats])
        if not ok.any():
            ok = w.p_ring == ring
            if cats is not None and np.isin(w.p_cat[ok], [CATEGORY_INDEX[c] for c in cats]).any():
                ok &= np.isin(w.p_cat, [CATEGORY_INDEX[c] for c in cats])
        idx = np.flatnonzero(ok)
        hot = rng.random(n) < hot_share
        wh = w.p_hot[idx] ** hot_power
        out = np.where(hot, rng.choice(idx, size=n, p=wh / wh.sum()), rng.choice(idx, size=n))
        return out

    def fraud_country(self) -> int:
        """A country fraudsters operate from or ship to."""
        return int(self.rng.choice(FRAUDSTER_C, p=FRAUDSTER_P))

    def victim_country(self) -> int:
        """The issuing country of a stolen card."""
        return int(self.rng.choice(VICTIM_C, p=VICTIM_P))

    def fraud_ip(self, country: int) -> str:
        """A fraudster's IP: a hosting/VPN address half of the time, else residential in `country`."""
        if self.rng.random() < 0.5:
            return hosting_ips(self.rng, 1)[0]
        return residential_ips(self.rng, np.array([country]))[0]

    def fraud_pm(self, usual: int | None = None) -> int:
        """A payment method for a fraudulent order (crypto/BNPL when the scenario has them)."""
        rng = self.rng
        if self.scenario == "new_payment_method" and rng.random() < 0.6:
            return PAYMENT_INDEX["crypto"] if rng.random() < 0.8 else PAYMENT_INDEX["bnpl"]
        if usual is not None and rng.random() < 0.6:
            return usual
        return PAYMENT_INDEX["credit_card"] if rng.random() < 0.75 else PAYMENT_INDEX["debit_card"]
