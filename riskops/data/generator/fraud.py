"""Fraud traffic of a segment: episodes of the typology in `riskops.schema.FRAUD_TYPES`, one function each.

Fraudsters prefer resellable items within categories, so part of the signal lives in the product
text; each episode labels its rows with its `fraud_type`. `fraud_traffic` splits the segment's fraud
rows over the typologies (`FRAUD_MIX`) and runs episodes of `EPISODE_SIZE` rows until each is filled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from riskops.data.generator.segment import Segment
from riskops.data.generator.tables import (
    DAY_NS,
    EPISODE_SIZE,
    FRAUD_MIX,
    HOUR_NS,
    IS_CARD_PM,
    MIN_NS,
    MS_NS,
    PAYMENT_INDEX,
    RING_FRAUD_RATE,
    SEC_NS,
)
from riskops.data.generator.world import hosting_ips, residential_ips
from riskops.schema import CHANNELS, COUNTRIES

Episode = Callable[[Segment, "FraudRows", int], None]


def fraud_traffic(seg: Segment) -> dict[str, np.ndarray]:
    """The segment's fraud rows (columns as in `FraudRows.columns`), episode by episode."""
    out = FraudRows(seg)
    total = int(round(seg.rows * seg.fraud_rate))
    targets = allocate(total, FRAUD_MIX)
    if seg.scenario == "fraud_ring":
        targets["fraud_ring"] = int(round(seg.rows * RING_FRAUD_RATE))
    elif seg.scenario == "promotion_season":  # promotions bring mostly legitimate newcomers
        targets = allocate(int(round(total * 0.85)), FRAUD_MIX)
    episodes: dict[str, Episode] = dict(EPISODES)
    if seg.scenario == "fraud_ring" and targets["fraud_ring"]:
        ring = recruit_ring(seg)
        episodes["fraud_ring"] = lambda s, o, n: fraud_ring(s, o, n, ring)
    for ftype, target in targets.items():
        lo, hi = EPISODE_SIZE[ftype]
        remaining = target
        while remaining > 0:
            k = min(int(seg.rng.integers(lo, hi + 1)), remaining)
            if remaining - k < lo:
                k = remaining
            episodes[ftype](seg, out, k)
            remaining -= k
    return out.columns()


def card_testing(seg: Segment, out: FraudRows, n: int) -> None:
    """Card testing: many tiny authorisations in minutes, one card or a batch from one issuer."""
    rng, w = seg.rng, seg.w
    t0 = seg.t0(n * 3 * MIN_NS)
    fc = seg.fraud_country()
    if rng.random() < 0.55:
        acct = w.new_account(rng, t0 - int(rng.uniform(0, 20) * DAY_NS), home=fc)
    else:
        acct = w.account(int(w.pick_users(rng, 1, t0)[0]))
    device, ip = w.device_ids(1)[0], seg.fraud_ip(fc)
    vc = seg.victim_country()
    cb, cm = w.cards(rng, np.full(n, vc))
    if rng.random() < 0.7:  # one card, many tiny authorisations
        cm[:] = cm[0]
    else:  # a batch of stolen numbers from one issuer
        cm = np.array([cm[0][:-4] + c[-4:] for c in cm], dtype=object)
    cb[:] = cb[0]
    ts = t0 + np.cumsum((rng.exponential(35.0, n) * SEC_NS).astype(np.int64))
    p = seg.pick_products(n, ("gift_cards", "software", "books"), max_usd=6.0, hot_share=0.8)
    pm = PAYMENT_INDEX["credit_card"] if rng.random() < 0.7 else PAYMENT_INDEX["debit_card"]
    status = np.where(rng.random(n) < 0.55, "cancelled", "completed")
    channel = 0 if rng.random() < 0.7 else int(rng.integers(0, len(CHANNELS)))
    out.add(ts, acct, p, "card_testing", device=device, ip=ip, channel=channel, pm=pm, card_bin=cb,
            card_masked=cm, billing=vc, shipping=acct["home"], status=status, qty=np.ones(n, np.int64))


def abnormal_order(seg: Segment, out: FraudRows, n: int) -> None:
    """An established account orders far above its usual basket, often shipped elsewhere."""
    rng, w = seg.rng, seg.w
    t0 = seg.t0(2 * HOUR_NS)
    acct = w.account(int(w.pick_users(rng, 1, t0, min_age_days=30)[0]))
    norm = float(np.exp(acct["budget"]))
    p = seg.pick_products(n, ("electronics", "jewelry", "gift_cards", "fashion", "travel", "sports"),
                           min_usd=max(8 * norm, 150.0))
    qty = rng.choice([1, 1, 2, 3, 5], size=n)
    ts = t0 + np.cumsum((rng.exponential(6.0, n) * MIN_NS).astype(np.int64))
    device = acct["device"] if rng.random() < 0.5 else w.device_ids(1)[0]
    ip = acct["ip"] if rng.random() < 0.5 else seg.fraud_ip(acct["home"])
    shipping = acct["home"] if rng.random() < 0.6 else seg.fraud_country()
    out.add(ts, acct, p, "abnormal_order", device=device, ip=ip, channel=acct["channel"],
            pm=seg.fraud_pm(acct["pm"]), billing=acct["billing"], shipping=shipping, qty=qty)


def payment_mismatch(seg: Segment, out: FraudRows, n: int) -> None:
    """A victim's card billed in one country, shipped to another, an unusual payment method."""
    rng, w = seg.rng, seg.w
    t0 = seg.t0(6 * HOUR_NS)
    vc = seg.victim_country()
    sc = seg.fraud_country()
    while sc == vc:
        sc = int(rng.integers(0, len(COUNTRIES)))
    if rng.random() < 0.5:
        acct = w.new_account(rng, t0 - int(rng.uniform(0, 90) * DAY_NS))
        device = acct["device"]
    else:
        acct = w.account(int(w.pick_users(rng, 1, t0)[0]))
        device = acct["device"] if rng.random() < 0.4 else w.device_ids(1)[0]
    usual = acct["pm"]
    choices = [m for m in ("credit_card", "gift_card", "bank_transfer", "debit_card") if PAYMENT_INDEX[m] != usual]
    pm = PAYMENT_INDEX[choices[0]] if rng.random() < 0.7 else PAYMENT_INDEX[choices[int(rng.integers(len(choices)))]]
    if seg.scenario == "new_payment_method" and rng.random() < 0.4:
        pm = seg.fraud_pm()
    cb, cm = w.cards(rng, np.array([vc]))
    ts = t0 + np.cumsum((rng.exponential(40.0, n) * MIN_NS).astype(np.int64))
    p = seg.pick_products(n, ("electronics", "jewelry", "gift_cards", "software", "fashion", "travel"))
    ip = acct["ip"] if acct["idx"] >= 0 and rng.random() < 0.3 else seg.fraud_ip(sc)
    out.add(ts, acct, p, "payment_mismatch", device=device, ip=ip, channel=acct["channel"], pm=pm,
            card_bin=cb[0], card_masked=cm[0], billing=vc, shipping=sc, qty=np.ones(n, np.int64))


def refund_abuse(seg: Segment, out: FraudRows, n: int) -> None:
    """Orders over days to weeks, most of them refunded."""
    rng, w = seg.rng, seg.w
    t0 = seg.t0(14 * DAY_NS)
    if rng.random() < 0.7:
        acct = w.account(int(w.pick_users(rng, 1, t0, min_age_days=14)[0]))
    else:
        acct = w.new_account(rng, t0 - int(rng.uniform(5, 120) * DAY_NS), email_style="legit")
    ts = t0 + np.sort((rng.random(n) * rng.uniform(2, 14) * DAY_NS).astype(np.int64))
    norm = float(np.exp(acct["budget"]))
    p = seg.pick_products(n, ("fashion", "electronics", "jewelry", "beauty", "home"), min_usd=max(1.5 * norm, 60),
                           hot_share=0.4)
    refund = rng.random(n) < 0.8
    refund[0] = True
    status = np.where(refund, "refunded", "completed")
    out.add(ts, acct, p, "refund_abuse", device=acct["device"], ip=acct["ip"], channel=acct["channel"],
            pm=seg.fraud_pm(acct["pm"]), billing=acct["billing"], shipping=acct["home"], is_refund=refund,
            status=status, qty=rng.choice([1, 1, 1, 2, 3], size=n))


def abnormal_goods(seg: Segment, out: FraudRows, n: int) -> None:
    """A listing far off its normal price (a fifth, or many times), bought by several accounts."""
    rng, w = seg.rng, seg.w
    t0 = seg.t0(8 * HOUR_NS)
    # a listing far off its normal price: an iPhone for a fifth of its price, or a cable for thousands
    m = int(rng.choice(len(w.m_id), p=w.m_pop * ~w.m_ring / (w.m_pop * ~w.m_ring).sum()))
    lo = int(w.m_off[m])
    prods = np.arange(lo, lo + max(1, min(int(w.m_size[m]), 8)))
    hw = w.p_hot[prods]
    prod = int(rng.choice(prods, p=hw / hw.sum()))
    factor = rng.uniform(0.1, 0.3) if rng.random() < 0.6 else rng.uniform(5.0, 15.0)
    ts = t0 + np.sort((rng.random(n) * rng.uniform(1, 8) * HOUR_NS).astype(np.int64))
    for i in range(n):
        if rng.random() < 0.5:
            acct = w.new_account(rng, int(ts[i]) - int(rng.uniform(0, 60) * DAY_NS))
        else:
            acct = w.account(int(w.pick_users(rng, 1, int(ts[i]))[0]))
        out.add(ts[i : i + 1], acct, np.array([prod]), "abnormal_goods", device=acct["device"], ip=acct["ip"],
                channel=acct["channel"], pm=seg.fraud_pm(acct["pm"]), billing=acct["billing"],
                shipping=acct["home"], qty=np.ones(1, np.int64), price_factor=factor)


def new_account_burst(seg: Segment, out: FraudRows, n: int) -> None:
    """A brand-new account buying resellable goods within hours of signing up."""
    rng, w = seg.rng, seg.w
    t0 = seg.t0(36 * HOUR_NS)
    acct = w.new_account(rng, t0 - int(rng.uniform(0, 0.5) * DAY_NS))
    span = rng.uniform(2, 36) * HOUR_NS
    ts = t0 + np.sort((rng.random(n) * span).astype(np.int64))
    p = seg.pick_products(n, ("electronics", "gift_cards", "jewelry", "software", "fashion", "toys"))
    fc = seg.fraud_country() if rng.random() < 0.5 else acct["home"]
    out.add(ts, acct, p, "new_account_burst", device=acct["device"], ip=seg.fraud_ip(fc), channel=acct["channel"],
            pm=seg.fraud_pm(acct["pm"]), billing=acct["billing"], shipping=fc, qty=rng.choice([1, 1, 1, 2], size=n))


def account_farm(seg: Segment, out: FraudRows, n: int) -> None:
    """Many new accounts on one device (and one IP, or a proxy each) buying small resellable items."""
    rng, w = seg.rng, seg.w
    t0 = seg.t0(3 * DAY_NS)
    fc = seg.fraud_country()
    device = w.device_ids(1)[0]
    ip = seg.fraud_ip(fc)
    rotate_ip = rng.random() < 0.4  # residential proxies: one IP per account
    channel = int(rng.integers(0, len(CHANNELS)))
    k = max(min(n, 4), int(round(n / 1.6)))
    owner = np.concatenate([np.arange(k), rng.integers(0, k, n - k)])
    ts = t0 + np.sort((rng.random(n) * rng.uniform(0.2, 3.0) * DAY_NS).astype(np.int64))
    accts = [w.new_account(rng, t0 - int(rng.uniform(0, 60) * DAY_NS), home=fc if rng.random() < 0.5 else None)
             for _ in range(k)]
    ips = [seg.fraud_ip(fc) if rotate_ip else ip for _ in range(k)]
    p = seg.pick_products(n, ("gift_cards", "software", "electronics", "toys", "beauty"), max_usd=250)
    for i in range(n):
        a = accts[owner[i]]
        out.add(ts[i : i + 1], a, p[i : i + 1], "account_farm", device=device, ip=ips[owner[i]], channel=channel,
                pm=seg.fraud_pm(a["pm"]), billing=a["billing"], shipping=a["home"], qty=np.ones(1, np.int64))


def account_takeover(seg: Segment, out: FraudRows, n: int) -> None:
    """An old account suddenly used from another country, new device, expensive goods."""
    rng, w = seg.rng, seg.w
    t0 = seg.t0(4 * HOUR_NS)
    acct = w.account(int(w.pick_users(rng, 1, t0, min_age_days=180)[0]))
    fc = seg.fraud_country()
    while fc == acct["home"]:
        fc = int(rng.integers(0, len(COUNTRIES)))
    ts = t0 + np.cumsum((rng.exponential(20.0, n) * MIN_NS).astype(np.int64))
    p = seg.pick_products(n, ("electronics", "gift_cards", "jewelry", "software"), min_usd=100.0, hot_share=0.8)
    pm = acct["pm"] if IS_CARD_PM[acct["pm"]] or rng.random() < 0.5 else PAYMENT_INDEX["credit_card"]
    # careful takeovers go through a residential proxy in the victim's country, on the usual kind of device
    careful = rng.random() < 0.4
    ip = residential_ips(rng, np.array([acct["home"]]))[0] if careful else seg.fraud_ip(fc)
    channel = acct["channel"] if careful else (0 if rng.random() < 0.6 else int(rng.integers(0, len(CHANNELS))))
    out.add(ts, acct, p, "account_takeover", device=w.device_ids(1)[0], ip=ip, channel=channel, pm=pm,
            billing=acct["billing"], shipping=fc, qty=rng.choice([1, 1, 2], size=n))


@dataclass
class FraudRing:
    """The fraud_ring scenario's ring: a few devices and hosting IPs, two drop countries, new accounts."""

    country: int
    devices: np.ndarray
    ips: np.ndarray
    drops: list[int]
    accounts: list[dict]


def recruit_ring(seg: Segment) -> FraudRing:
    """Set up the ring of a fraud_ring segment (its accounts sign up around the segment's start)."""
    rng, w = seg.rng, seg.w
    country = seg.fraud_country()
    devices = w.device_ids(int(rng.integers(3, 6)))
    ips = hosting_ips(rng, int(rng.integers(2, 4)))
    drops = [seg.fraud_country() for _ in range(2)]
    n_acc = max(8, int(round(seg.rows * RING_FRAUD_RATE / 2.5)))
    accounts = [w.new_account(rng, seg.start - int(rng.uniform(0, 15) * DAY_NS) +
                              int(rng.uniform(0, 0.5) * seg.span)) for _ in range(n_acc)]
    return FraudRing(country, devices, ips, drops, accounts)


def fraud_ring(seg: Segment, out: FraudRows, n: int, ring: FraudRing) -> None:
    """The fraud_ring scenario: ring accounts on shared devices and hosting IPs buy the new vocabulary."""
    rng = seg.rng
    t0 = seg.t0(3 * HOUR_NS)
    ts = t0 + np.sort((rng.random(n) * rng.uniform(1, 3) * HOUR_NS).astype(np.int64))
    ready = [a for a in ring.accounts if a["signup"] <= t0] or ring.accounts[:1]
    p = seg.pick_products(n, ring=True, hot_share=0.5)
    for i in range(n):
        a = ready[int(rng.integers(len(ready)))]
        a["signup"] = min(a["signup"], int(ts[i]))
        vc = seg.victim_country()
        cb, cm = seg.w.cards(rng, np.array([vc]))
        out.add(ts[i : i + 1], a, p[i : i + 1], "fraud_ring",
                device=ring.devices[int(rng.integers(len(ring.devices)))],
                ip=ring.ips[int(rng.integers(len(ring.ips)))], channel=int(rng.integers(0, 3)),
                pm=seg.fraud_pm(), card_bin=cb[0], card_masked=cm[0], billing=vc,
                shipping=ring.drops[int(rng.integers(2))], qty=np.ones(1, np.int64))


# the typology's episodes (fraud_ring needs its ring: `fraud_traffic` adds it when the scenario has one)
EPISODES: dict[str, Episode] = {
    "card_testing": card_testing,
    "abnormal_order": abnormal_order,
    "payment_mismatch": payment_mismatch,
    "refund_abuse": refund_abuse,
    "abnormal_goods": abnormal_goods,
    "new_account_burst": new_account_burst,
    "account_farm": account_farm,
    "account_takeover": account_takeover,
}


def allocate(total: int, shares: dict[str, float]) -> dict[str, int]:
    """Split `total` by `shares` with the largest-remainder rule (sums exactly to total)."""
    keys = list(shares)
    raw = np.array([shares[k] for k in keys]) * total / sum(shares.values())
    base = np.floor(raw).astype(int)
    rest = total - base.sum()
    order = np.argsort(-(raw - base), kind="stable")
    base[order[:rest]] += 1
    return {k: int(v) for k, v in zip(keys, base, strict=True)}


class FraudRows:
    """Collects fraud rows episode by episode (few enough for plain lists)."""

    def __init__(self, seg: Segment):
        self.seg = seg
        self.cols: dict[str, list] = {k: [] for k in (
            "ts", "user_id", "merchant_id", "merchant_category", "device_id", "ip_address", "email", "amount",
            "currency", "payment_method", "card_bin", "card_number_masked", "billing_country", "shipping_country",
            "product_title", "product_category", "quantity", "channel", "account_age_days", "is_refund",
            "order_status", "is_fraud", "fraud_type")}  # fmt: skip

    def add(self, ts, acct: dict, p, ftype: str, *, device, ip, channel, pm, billing, shipping, qty,
            card_bin=None, card_masked=None, is_refund=None, status=None, price_factor: float = 1.0) -> None:
        """Add the rows of one episode: `acct` orders products `p` at times `ts` (ids of this world)."""
        seg, w = self.seg, self.seg.w
        ts = np.minimum(np.asarray(ts, dtype=np.int64), seg.end - MS_NS) // MS_NS * MS_NS
        ts = np.maximum(ts, max(acct["signup"], seg.start))
        n = len(ts)
        p = np.asarray(p, dtype=np.int64)
        title, unit = seg.title_price(p)
        cur = np.full(n, acct["currency"])
        amount = seg.amounts(unit * price_factor, np.asarray(qty), cur)
        has_card = bool(IS_CARD_PM[pm])
        cb = acct["card_bin"] if card_bin is None else card_bin
        cm = acct["card_masked"] if card_masked is None else card_masked
        cb = np.broadcast_to(np.asarray(cb, dtype=object), (n,)) if has_card else np.full(n, "", dtype=object)
        cm = np.broadcast_to(np.asarray(cm, dtype=object), (n,)) if has_card else np.full(n, "", dtype=object)
        refund = np.zeros(n, bool) if is_refund is None else np.asarray(is_refund, bool)
        st = np.full(n, "completed", dtype=object) if status is None else np.asarray(status, dtype=object)
        c = self.cols
        c["ts"].extend(ts.tolist())
        c["user_id"].extend([acct["user_id"]] * n)
        c["merchant_id"].extend(w.m_id[w.p_merchant[p]].tolist())
        c["merchant_category"].extend(w.m_label[w.p_merchant[p]].tolist())
        c["device_id"].extend([device] * n)
        c["ip_address"].extend([ip] * n)
        c["email"].extend([acct["email"]] * n)
        c["amount"].extend(amount.tolist())
        c["currency"].extend(cur.tolist())
        c["payment_method"].extend([pm] * n)
        c["card_bin"].extend(cb.tolist())
        c["card_number_masked"].extend(cm.tolist())
        c["billing_country"].extend([billing] * n)
        c["shipping_country"].extend([shipping] * n)
        c["product_title"].extend(title.tolist())
        c["product_category"].extend(w.p_cat[p].tolist())
        c["quantity"].extend(np.asarray(qty, dtype=np.int64).tolist())
        c["channel"].extend([channel] * n)
        c["account_age_days"].extend(((ts - acct["signup"]) // DAY_NS).clip(0).tolist())
        c["is_refund"].extend(refund.tolist())
        c["order_status"].extend(st.tolist())
        c["is_fraud"].extend([1] * n)
        c["fraud_type"].extend([ftype] * n)

    def columns(self) -> dict[str, np.ndarray]:
        """The collected rows as typed column arrays."""
        out = {}
        for k, v in self.cols.items():
            if k in ("ts", "currency", "payment_method", "billing_country", "shipping_country", "product_category",
                     "quantity", "channel", "account_age_days", "is_fraud"):
                out[k] = np.array(v, dtype=np.int64)
            elif k == "amount":
                out[k] = np.array(v, dtype=float)
            elif k == "is_refund":
                out[k] = np.array(v, dtype=bool)
            else:
                out[k] = np.array(v, dtype=object)
        return out
