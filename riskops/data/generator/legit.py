"""Legitimate traffic of a segment, vectorised: returning users, seasonality, products near each user's
price level, refunds, and legitimate look-alikes of the fraud patterns (travel, gifts, shared devices
and IPs, VPNs, kiosks, bursts of small orders, new phones).
"""

from __future__ import annotations

import numpy as np

from riskops.data.generator.segment import Segment
from riskops.data.generator.tables import (
    COUNTRY_P,
    COUNTRY_UTC,
    DAY_NS,
    HOUR_NS,
    IS_CARD_PM,
    MS_NS,
    QTY_CUM,
    QTY_VALUES,
    REFUND_BY_CAT,
    SEC_NS,
)
from riskops.data.generator.world import hosting_ips, residential_ips
from riskops.schema import CHANNELS, COUNTRIES, PAYMENT_METHODS


def legit_traffic(seg: Segment, n: int) -> dict[str, np.ndarray]:
    """`n` legitimate orders of the segment (columns as in `to_frame`'s input), in the order drawn.

    The steps below draw from the segment's random generator in a fixed order: reordering them
    changes every generated dataset (the generator's output is bit-identical for a seed).
    """
    rng, w, us = seg.rng, seg.w, seg.w.users
    n_burst_rows = int(n * 0.025) if n >= 200 else 0
    n_base = n - n_burst_rows
    u, ts, p = _returning_orders(seg, n_base)
    u, ts, p, burst = _small_item_bursts(seg, u, ts, p, n_burst_rows)
    n = len(u)
    device, channel, ip, shipping, p = _devices_and_destinations(seg, u, p, burst)
    m = w.p_merchant[p]
    cat = w.p_cat[p]
    qty = QTY_VALUES[(rng.random(n)[:, None] > QTY_CUM[cat]).sum(axis=1).clip(0, len(QTY_VALUES) - 1)]
    qty[burst] = 1
    title, unit = seg.title_price(p)

    # payment
    pm = seg.pm[u].copy()
    other = rng.random(n) < 0.08
    pm[other] = rng.choice(len(PAYMENT_METHODS), size=int(other.sum()), p=seg.pm_p)
    has_card = IS_CARD_PM[pm]
    card_bin = np.where(has_card, us["card_bin"][u], "").astype(object)
    card_masked = np.where(has_card, us["card_masked"][u], "").astype(object)

    cur = us["currency"][u]
    amount = seg.amounts(unit, qty, cur)
    refund = rng.random(n) < REFUND_BY_CAT[cat]
    status = np.where(refund, 2, np.where(rng.random(n) < 0.015, 1, 0))  # refunded / cancelled / completed
    status = np.array(["completed", "cancelled", "refunded"], dtype=object)[status]
    age = (ts - us["signup"][u]) // DAY_NS
    return {
        "ts": ts.astype(np.int64),
        "user_id": us["id"][u],
        "merchant_id": w.m_id[m],
        "merchant_category": w.m_label[m],
        "device_id": device,
        "ip_address": ip,
        "email": us["email"][u],
        "amount": amount,
        "currency": cur,
        "payment_method": pm,
        "card_bin": card_bin,
        "card_number_masked": card_masked,
        "billing_country": us["billing"][u],
        "shipping_country": shipping,
        "product_title": title,
        "product_category": cat,
        "quantity": qty.astype(np.int64),
        "channel": channel,
        "account_age_days": np.maximum(age, 0).astype(np.int64),
        "is_refund": refund,
        "order_status": status,
        "is_fraud": np.zeros(n, dtype=np.int64),
        "fraud_type": np.full(n, "none", dtype=object),
    }


def _returning_orders(seg: Segment, n_base: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Users (activity-weighted), event times, and products (a favourite or popular merchant, an item
    near the user's usual price level, now and then a splurge)."""
    rng, w, us = seg.rng, seg.w, seg.w.users
    act = us["activity"] * (us["signup"] < seg.end)
    u = rng.choice(len(act), size=n_base, p=act / act.sum())
    ts = seg.times(n_base, COUNTRY_UTC[us["home"][u]])
    signup = us["signup"][u]
    early = ts < signup
    if early.any():  # new users: their orders come after sign-up, many soon after it
        k = int(early.sum())
        delay = (rng.exponential(1.5, k) * DAY_NS).astype(np.int64) + (rng.random(k) * HOUR_NS).astype(np.int64)
        ts[early] = np.minimum(signup[early] + delay, seg.end - MS_NS) // MS_NS * MS_NS
    # merchant: one of the user's favourites or a popular one
    pop = w.m_pop.copy()
    if seg.ring_merchant >= 0:
        pop[seg.ring_merchant] *= 0.5
    m = np.where(rng.random(n_base) < 0.55, us["fav"][u, rng.integers(0, 3, n_base)],
                 rng.choice(len(pop), size=n_base, p=pop / pop.sum()))
    # product: popular items of the catalog, near the user's usual price level
    k = 4
    pos = np.floor(w.m_size[m][:, None] * rng.random((n_base, k)) ** 1.7).astype(np.int64)
    cand = w.m_off[m][:, None] + pos
    score = (-np.abs(np.log(w.p_price[cand]) - us["budget"][u][:, None]) / 0.8 - 0.25 * np.log(w.p_hot[cand])
             + rng.gumbel(size=(n_base, k)))
    p = cand[np.arange(n_base), np.argmax(score, axis=1)]
    # now and then a legitimate splurge: a new phone, a console, a watch as a present
    splurge = rng.random(n_base) < 0.025
    if splurge.any():
        pool = np.flatnonzero((w.p_price >= 150) & (w.p_hot >= 2) & ~w.p_ring)
        if len(pool):
            wp = w.p_hot[pool] * w.m_pop[w.p_merchant[pool]]
            p[splurge] = rng.choice(pool, size=int(splurge.sum()), p=wp / wp.sum())
    return u, ts, p


def _small_item_bursts(
    seg: Segment, u: np.ndarray, ts: np.ndarray, p: np.ndarray, n_burst_rows: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Append bursts of cheap digital/small orders in minutes after some orders (they look like card
    testing); returns users, times, products and which rows are burst rows."""
    rng, w = seg.rng, seg.w
    n_base = len(u)
    # small-item bursts: a few cheap digital/small orders in minutes (look like card testing)
    if n_burst_rows:
        cheap = np.flatnonzero((w.p_price <= 15) & ~w.p_ring)
        sizes = rng.integers(2, 6, n_burst_rows)
        sizes = sizes[: np.searchsorted(np.cumsum(sizes), n_burst_rows) + 1]
        sizes[-1] -= sizes.sum() - n_burst_rows
        sizes = sizes[sizes > 0]
        anchors = rng.integers(0, n_base, len(sizes))
        rep = np.repeat(anchors, sizes)
        gaps = (rng.exponential(75.0, len(rep)) * SEC_NS).astype(np.int64)
        ts_b = np.minimum(ts[rep] + grouped_cumsum(gaps, sizes), seg.end - MS_NS) // MS_NS * MS_NS
        p_b = cheap[rng.integers(0, len(cheap), len(rep))] if len(cheap) else p[rep]
        u, ts, p = (np.concatenate([u, u[rep]]), np.concatenate([ts, ts_b]), np.concatenate([p, p_b]))
        burst = np.concatenate([np.zeros(n_base, bool), np.ones(len(rep), bool)])
    else:
        burst = np.zeros(n_base, bool)
    return u, ts, p, burst


def _devices_and_destinations(
    seg: Segment, u: np.ndarray, p: np.ndarray, burst: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Device, channel, IP and shipping country of each order: usually the user's own, sometimes
    travel, a VPN, a shared kiosk, a new phone or a gift abroad (which may change the product)."""
    rng, w, us = seg.rng, seg.w, seg.w.users
    n = len(u)
    # device / IP / channel
    second = (us["n_dev"][u] == 2) & (rng.random(n) < 0.35)
    dcol = second.astype(np.intp)
    device = us["dev"][u, dcol].astype(object)
    channel = us["dev_channel"][u, dcol]
    ip = us["ip"][u, ((us["n_ip"][u] == 2) & (rng.random(n) < 0.3)).astype(np.intp)].astype(object)
    home = us["home"][u]
    shipping = home.copy()
    r = rng.random(n)
    travel = r < 0.03
    vpn = (r >= 0.03) & (r < 0.045)
    kiosk = (r >= 0.045) & (r < 0.055)  # library / shop / hotel-lobby computers used by many people
    new_dev = (rng.random(n) < 0.025) | (travel & (rng.random(n) < 0.4))  # a new phone, a hotel laptop
    new_dev &= ~kiosk
    if new_dev.any():
        device[new_dev] = w.device_ids(int(new_dev.sum()))
        channel[new_dev] = rng.integers(0, len(CHANNELS), int(new_dev.sum()))
    if travel.any():
        dest = rng.choice(len(COUNTRIES), size=int(travel.sum()), p=COUNTRY_P)
        ip[travel] = residential_ips(rng, dest)
        shipping[travel] = np.where(rng.random(len(dest)) < 0.5, dest, home[travel])
    if vpn.any():
        ip[vpn] = hosting_ips(rng, int(vpn.sum()))
    if kiosk.any():
        j = rng.integers(0, len(w.kiosk_dev), int(kiosk.sum()))
        device[kiosk], ip[kiosk], channel[kiosk] = w.kiosk_dev[j], w.kiosk_ip[j], 0
    gift = rng.random(n) < 0.03  # gifts to friends/family abroad
    shipping[gift] = rng.choice(len(COUNTRIES), size=int(gift.sum()), p=COUNTRY_P)
    # gifts and travel purchases are often the resellable kind too (a phone, a console, a gift card)
    treat = (gift | travel) & ~burst & (rng.random(n) < 0.3)
    pool = np.flatnonzero((w.p_hot >= 2) & ~w.p_ring)
    if treat.any() and len(pool):
        wp = w.p_hot[pool] * w.m_pop[w.p_merchant[pool]]
        p[treat] = rng.choice(pool, size=int(treat.sum()), p=wp / wp.sum())
    return device, channel, ip, shipping, p


def grouped_cumsum(values: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Cumulative sums restarting at each group (`sizes`: consecutive group lengths)."""
    c = np.cumsum(values)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    before = np.where(starts > 0, c[np.maximum(starts - 1, 0)], 0)
    return c - np.repeat(before, sizes)
