"""The persistent world: users (home country, devices, IPs, cards, usual payment method), merchants
and their product catalogues, and the accounts fraudsters create. Built once per seed; segments of
traffic draw from it.
"""

from __future__ import annotations

import numpy as np

from riskops.data.generator.config import GeneratorConfig, default_days, parse_start
from riskops.data.generator.ids import hex_strings, mix_bits, stable_key
from riskops.data.generator.product_templates import (
    QUALIFIERS,
    RING_MERCHANT_LABEL,
    RING_TEMPLATES,
    TEMPLATES,
    Template,
)
from riskops.data.generator.tables import (
    BASE_PM_P,
    CAT_TRAFFIC,
    CATEGORY_INDEX,
    COUNTRY_CUR,
    COUNTRY_P,
    DAY_NS,
    DOMAIN_P,
    DOMAINS,
    FIRST_NAMES,
    FRAUD_DOMAINS,
    FRAUDSTER_C,
    FRAUDSTER_P,
    HOSTING_OCTETS,
    LAST_NAMES,
    MARKETPLACE_LABELS,
    MARKETPLACE_TRAFFIC,
    MERCHANT_CAT_P,
    MERCHANT_LABELS,
    OCTET_LEN,
    OCTET_OFF,
    OCTET_POOL,
)
from riskops.schema import (
    CHANNELS,
    COUNTRIES,
    PAYMENT_METHODS,
)


def ip_strings(o1: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Dotted IPv4 strings with first octets `o1`, the rest random."""
    n = len(o1)
    o2, o3 = rng.integers(0, 256, (2, n))
    o4 = rng.integers(1, 255, n)
    parts = [np.asarray(o1).astype(str), o2.astype(str), o3.astype(str), o4.astype(str)]
    out = parts[0]
    for p in parts[1:]:
        out = np.char.add(np.char.add(out, "."), p)
    return out.astype(object)


def residential_ips(rng: np.random.Generator, country: np.ndarray) -> np.ndarray:
    """Residential IPs in each of `country` (indices), from the country's address ranges."""
    country = np.asarray(country, dtype=np.intp)
    pick = (rng.random(len(country)) * OCTET_LEN[country]).astype(np.intp)
    return ip_strings(OCTET_POOL[OCTET_OFF[country] + pick], rng)


def hosting_ips(rng: np.random.Generator, n: int) -> np.ndarray:
    """`n` IPs in data-centre / VPN / proxy ranges."""
    return ip_strings(HOSTING_OCTETS[rng.integers(0, len(HOSTING_OCTETS), n)], rng)


class World:
    """Users, devices, IPs, cards, merchants and their catalogs: everything that persists over time."""

    def __init__(self, config: GeneratorConfig):
        self.config = config
        self.key = stable_key("riskops-generator", config.seed)
        rng = np.random.default_rng([config.seed, 1])
        self.start_ns = parse_start(config.start)
        n_users = config.n_users or max(300, config.rows // 6)
        n_merchants = config.n_merchants or int(np.clip(config.rows // 200, 40, 600))
        self._user_counter = 0
        self._device_counter = 0
        self._card_counter = 0
        self._merchant_counter = 0
        self._build_bins(rng)
        self._build_merchants(rng, n_merchants)
        self.users: dict[str, np.ndarray] = {}
        days = default_days(config) if config.days is None else config.days
        self.add_users(rng, n_users, self.start_ns, int(days * DAY_NS), new_share=0.08)
        n_kiosk = max(3, n_users // 800)
        self.kiosk_dev = self.device_ids(n_kiosk)
        self.kiosk_ip = residential_ips(rng, rng.choice(len(COUNTRIES), size=n_kiosk, p=COUNTRY_P))

    # -- ids ---------------------------------------------------------------------------------------
    def user_ids(self, n: int) -> np.ndarray:
        """`n` new user ids (U + 8 digits), never repeated in this world."""
        idx = np.arange(self._user_counter, self._user_counter + n)
        self._user_counter += n
        num = mix_bits(idx, self.key, 26).astype(np.int64)
        return np.char.add("U", np.char.zfill(num.astype(str), 8)).astype(object)

    def device_ids(self, n: int) -> np.ndarray:
        """`n` new device ids (dev_ + 12 hex digits), never repeated in this world."""
        idx = np.arange(self._device_counter, self._device_counter + n)
        self._device_counter += n
        return np.char.add("dev_", hex_strings(mix_bits(idx, self.key ^ 0x5A5A, 48), 12)).astype(object)

    def merchant_ids(self, n: int) -> np.ndarray:
        """`n` new merchant ids (M + 6 digits), never repeated in this world."""
        idx = np.arange(self._merchant_counter, self._merchant_counter + n)
        self._merchant_counter += n
        num = mix_bits(idx, self.key ^ 0x3C3C, 18).astype(np.int64)
        return np.char.add("M", np.char.zfill(num.astype(str), 6)).astype(object)

    # -- cards -------------------------------------------------------------------------------------
    def _build_bins(self, rng: np.random.Generator) -> None:
        """Card BINs per issuing country (Visa, Mastercard, Amex) and how often each is used."""
        bins, amex = [], []
        for _ in COUNTRIES:
            b = [f"4{rng.integers(0, 100000):05d}" for _ in range(3)]
            b += [f"5{rng.integers(1, 6)}{rng.integers(0, 10000):04d}" for _ in range(2)]
            b += [f"3{rng.choice([4, 7])}{rng.integers(0, 10000):04d}"]
            bins.append(b)
            amex.append([False] * 5 + [True])
        self._bins = np.array(bins, dtype=object)
        self._bin_amex = np.array(amex)
        self._bin_p = np.array([0.22, 0.2, 0.13, 0.18, 0.17, 0.1])

    def cards(self, rng: np.random.Generator, country: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Card BINs issued in `country` and their masked numbers."""
        country = np.asarray(country, dtype=np.intp)
        n = len(country)
        j = rng.choice(6, size=n, p=self._bin_p)
        bins = self._bins[country, j]
        last4 = np.char.zfill(rng.integers(0, 10000, n).astype(str), 4)
        stars = np.where(self._bin_amex[country, j], "*****", "******")
        masked = np.char.add(np.char.add(bins.astype(str), stars), last4)
        return bins.astype(object), masked.astype(object)

    # -- merchants and catalogs --------------------------------------------------------------------
    def _build_merchants(self, rng: np.random.Generator, n: int) -> None:
        """Merchants (single-category shops and marketplaces), their catalogues and popularity."""
        cats = list(MERCHANT_CAT_P)
        p = np.array(list(MERCHANT_CAT_P.values()))
        main = rng.choice(len(cats), size=n, p=p / p.sum())
        market = rng.random(n) < 0.08
        titles, pcat, price, hot, owner = [], [], [], [], []
        labels, offsets, sizes = [], [], []
        for m in range(n):
            cat = cats[main[m]]
            if market[m]:
                chosen = list(rng.choice(cats, size=int(rng.integers(4, 7)), replace=False))
                size = int(rng.integers(60, 121))
                labels.append(MARKETPLACE_LABELS[int(rng.integers(len(MARKETPLACE_LABELS)))])
            else:
                chosen = [cat]
                size = int(rng.integers(12, 51))
                labels.append(MERCHANT_LABELS[cat][int(rng.integers(len(MERCHANT_LABELS[cat])))])
            level = float(np.exp(rng.normal(0.0, 0.1)))
            offsets.append(len(titles))
            t, c, pr, h = make_products(rng, chosen, size, level)
            titles += t
            pcat += c
            price += pr
            hot += h
            owner += [m] * len(t)
            sizes.append(len(t))
        self.m_id = self.merchant_ids(n)
        self.m_label = np.array(labels, dtype=object)
        self.m_off = np.array(offsets, dtype=np.int64)
        self.m_size = np.array(sizes, dtype=np.int64)
        # popularity: lognormal within a category, categories get their share of the traffic
        raw = np.exp(rng.normal(0.0, 0.9, n))
        group = np.where(market, -1, main)
        pop = np.zeros(n)
        for g in np.unique(group):
            sel = group == g
            share = MARKETPLACE_TRAFFIC if g < 0 else CAT_TRAFFIC[cats[g]] * (1 - MARKETPLACE_TRAFFIC)
            pop[sel] = raw[sel] / raw[sel].sum() * share
        self.m_pop = pop / pop.sum()
        self.m_ring = np.zeros(n, dtype=bool)
        self.p_title = np.array(titles, dtype=object)
        self.p_cat = np.array(pcat, dtype=np.int64)
        self.p_price = np.array(price, dtype=float)
        self.p_hot = np.array(hot, dtype=float)
        self.p_merchant = np.array(owner, dtype=np.int64)
        self.p_ring = np.zeros(len(titles), dtype=bool)

    def add_ring_merchant(self, rng: np.random.Generator) -> int:
        """A merchant that did not exist before, selling the fraud ring's new vocabulary."""
        m = len(self.m_id)
        t, pr, h = [], [], []
        for _ in range(int(rng.integers(14, 22))):
            tpl = RING_TEMPLATES[int(rng.integers(len(RING_TEMPLATES)))]
            title, mult, hm = fill_template(tpl, rng)
            t.append(title)
            pr.append(shop_price(tpl.price * mult * float(np.exp(rng.normal(0, 0.05)))))
            h.append(tpl.hot * hm)
        self.m_id = np.concatenate([self.m_id, self.merchant_ids(1)])
        self.m_label = np.append(self.m_label, RING_MERCHANT_LABEL)
        self.m_off = np.append(self.m_off, len(self.p_title))
        self.m_size = np.append(self.m_size, len(t))
        self.m_pop = np.append(self.m_pop, np.median(self.m_pop))
        self.m_ring = np.append(self.m_ring, True)
        self.p_title = np.concatenate([self.p_title, np.array(t, dtype=object)])
        self.p_cat = np.concatenate([self.p_cat, np.full(len(t), CATEGORY_INDEX["electronics"])])
        self.p_price = np.concatenate([self.p_price, pr])
        self.p_hot = np.concatenate([self.p_hot, h])
        self.p_merchant = np.concatenate([self.p_merchant, np.full(len(t), m)])
        self.p_ring = np.concatenate([self.p_ring, np.ones(len(t), dtype=bool)])
        return m

    # -- users -------------------------------------------------------------------------------------
    def add_users(self, rng: np.random.Generator, n: int, window_start: int, window_span: int, new_share: float,
                  activity_boost: float = 1.0) -> np.ndarray:
        """Create `n` users; `new_share` of them sign up inside the window, the rest before it."""
        home = rng.choice(len(COUNTRIES), size=n, p=COUNTRY_P)
        expat = rng.random(n) < 0.02
        billing = np.where(expat, rng.choice(len(COUNTRIES), size=n, p=COUNTRY_P), home)
        is_new = rng.random(n) < new_share
        age_days = np.where(rng.random(n) < 0.1, rng.uniform(0, 30, n), np.exp(rng.normal(6.2, 0.9, n)))
        age_days = np.clip(age_days, 0, 3650)
        signup = window_start - (age_days * DAY_NS).astype(np.int64)
        signup = np.where(is_new, window_start + (rng.random(n) * window_span * 0.95).astype(np.int64), signup)
        n_dev = 1 + (rng.random(n) < 0.45)
        devices = self.device_ids(2 * n).reshape(n, 2)
        dev_channel = rng.choice(len(CHANNELS), size=(n, 2), p=[0.3, 0.35, 0.35])
        dev_channel[:, 1] = np.where(rng.random(n) < 0.6, 0, dev_channel[:, 1])  # the second one is often a laptop
        ips = np.stack([residential_ips(rng, home), residential_ips(rng, home)], axis=1)
        n_ip = 1 + (rng.random(n) < 0.5)
        pm = rng.choice(len(PAYMENT_METHODS), size=n, p=BASE_PM_P)
        card_bin, card_masked = self.cards(rng, billing)
        base = len(self.users.get("id", []))
        # households share a device, offices/carrier NAT share an IP (legitimate look-alikes of farms)
        if base + n > 10:
            hh = np.flatnonzero(rng.random(n) < 0.03)
            if len(hh):
                other = rng.integers(0, n, len(hh))
                devices[hh, 0] = devices[other, 0]
                dev_channel[hh, 0] = dev_channel[other, 0]
            nat = np.flatnonzero(rng.random(n) < 0.07)
            if len(nat):
                pool_size = max(2, n // 250)
                pool_c = rng.choice(len(COUNTRIES), size=pool_size, p=COUNTRY_P)
                pool = residential_ips(rng, pool_c)
                pick = rng.integers(0, pool_size, len(nat))
                ips[nat, 1] = pool[pick]
                n_ip[nat] = 2
        first = rng.integers(0, len(FIRST_NAMES), n)
        last = rng.integers(0, len(LAST_NAMES), n)
        emails = make_emails(rng, first, last, fraud=False)
        new = {
            "id": self.user_ids(n),
            "email": emails,
            "home": home,
            "billing": billing,
            "currency": COUNTRY_CUR[billing],
            "signup": signup.astype(np.int64),
            "budget": rng.normal(np.log(45.0), 0.75, n),
            "activity": np.minimum(np.exp(rng.normal(0.0, 0.9, n)), 12.0) * activity_boost,
            "dev": devices,
            "dev_channel": dev_channel,
            "n_dev": n_dev,
            "ip": ips,
            "n_ip": n_ip,
            "pm": pm,
            "card_bin": card_bin,
            "card_masked": card_masked,
            "fav": rng.choice(len(self.m_id), size=(n, 3), p=self.m_pop / self.m_pop.sum()),
        }
        if not self.users:
            self.users = new
        else:
            self.users = {k: np.concatenate([self.users[k], new[k]]) for k in self.users}
        return np.arange(base, base + n)

    def account(self, u: int) -> dict:
        """One existing user as a plain record (for fraud episodes)."""
        us = self.users
        return {
            "user_id": us["id"][u],
            "email": us["email"][u],
            "home": int(us["home"][u]),
            "billing": int(us["billing"][u]),
            "currency": int(us["currency"][u]),
            "signup": int(us["signup"][u]),
            "pm": int(us["pm"][u]),
            "card_bin": us["card_bin"][u],
            "card_masked": us["card_masked"][u],
            "device": us["dev"][u, 0],
            "channel": int(us["dev_channel"][u, 0]),
            "ip": us["ip"][u, 0],
            "budget": float(us["budget"][u]),
            "idx": u,
        }

    def new_account(self, rng: np.random.Generator, signup: int, home: int | None = None,
                    email_style: str = "fraud") -> dict:
        """An account a fraudster registers (not part of the legit user table)."""
        if home is None:
            home = int(rng.choice(len(COUNTRIES), p=COUNTRY_P)) if rng.random() < 0.6 else int(
                rng.choice(FRAUDSTER_C, p=FRAUDSTER_P))
        first = rng.integers(0, len(FIRST_NAMES), 1)
        last = rng.integers(0, len(LAST_NAMES), 1)
        email = make_emails(rng, first, last, fraud=email_style == "fraud")[0]
        cb, cm = self.cards(rng, np.array([home]))
        return {
            "user_id": self.user_ids(1)[0],
            "email": email,
            "home": home,
            "billing": home,
            "currency": int(COUNTRY_CUR[home]),
            "signup": int(signup),
            "pm": int(rng.choice(len(PAYMENT_METHODS), p=BASE_PM_P)),
            "card_bin": cb[0],
            "card_masked": cm[0],
            "device": self.device_ids(1)[0],
            "channel": int(rng.integers(0, len(CHANNELS))),
            "ip": residential_ips(rng, np.array([home]))[0],
            "budget": float(rng.normal(np.log(60.0), 0.7)),
            "idx": -1,
        }

    def pick_users(self, rng: np.random.Generator, n: int, before: int, min_age_days: float = 0.0,
                   exclude: set[int] | None = None) -> np.ndarray:
        """Existing users (activity-weighted, so they have a history) who signed up before `before`."""
        us = self.users
        w = us["activity"] * (us["signup"] < before - int(min_age_days * DAY_NS))
        if exclude:
            w = w.copy()
            w[list(exclude)] = 0.0
        if w.sum() <= 0:
            w = us["activity"] * (us["signup"] < before)
        if w.sum() <= 0:
            w = np.ones(len(w))
        return rng.choice(len(w), size=n, replace=n > np.count_nonzero(w), p=w / w.sum())


def make_emails(rng: np.random.Generator, first: np.ndarray, last: np.ndarray, fraud: bool) -> np.ndarray:
    """E-mail addresses for names (indices into FIRST_NAMES / LAST_NAMES); `fraud`: throwaway styles."""
    n = len(first)
    out = np.empty(n, dtype=object)
    styles = rng.integers(0, 6, n)
    nums = rng.integers(1, 100, n)
    years = rng.integers(60, 100, n) % 100
    if fraud:
        domains = np.array(FRAUD_DOMAINS, dtype=object)[rng.integers(0, len(FRAUD_DOMAINS), n)]
        letters = np.array(list("abcdefghijklmnopqrstuvwxyz0123456789"))
        for i in range(n):
            f, la = FIRST_NAMES[first[i]], LAST_NAMES[last[i]].replace(".", "")
            s = styles[i] % 3
            if s == 0:
                local = "".join(rng.choice(letters, int(rng.integers(7, 12))))
            elif s == 1:
                local = f"{f}{la}{rng.integers(1000, 99999)}"
            else:
                local = f"{f}.{la}{rng.integers(100, 9999)}"
            out[i] = f"{local}@{domains[i]}"
        return out
    domains = np.array(DOMAINS, dtype=object)[rng.choice(len(DOMAINS), size=n, p=DOMAIN_P)]
    for i in range(n):
        f, la = FIRST_NAMES[first[i]], LAST_NAMES[last[i]]
        s = styles[i]
        if s == 0:
            local = f"{f}.{la}{nums[i]}"
        elif s == 1:
            local = f"{f}.{la}"
        elif s == 2:
            local = f"{f[0]}.{la}{nums[i]}"
        elif s == 3:
            local = f"{f}_{la}{years[i]:02d}"
        elif s == 4:
            local = f"{f}{la.replace('.', '')}{nums[i]}"
        else:
            local = f"{f}{nums[i] * 7 + 1}"
        out[i] = f"{local}@{domains[i]}"
    return out


def fill_template(tpl: Template, rng: np.random.Generator) -> tuple[str, float, float]:
    """A template filled with random slot options: (title, price multiplier, fraud appeal multiplier)."""
    values, mult, hot = {}, 1.0, 1.0
    for name, options in tpl.slots.items():
        opt = options[int(rng.integers(len(options)))]
        if isinstance(opt, tuple):
            values[name] = opt[0]
            mult *= opt[1]
            hot *= opt[2] if len(opt) > 2 else 1.0
        else:
            values[name] = opt
    title = " ".join(tpl.pattern.format(**values).split())
    return title, mult, hot


def shop_price(p: float) -> float:
    """A shop's price: .99 endings from 20 up, cents below."""
    if p >= 20:
        return float(np.ceil(p) - 0.01)
    return float(np.round(p, 2))


def make_products(rng: np.random.Generator, cats: list[str], size: int, level: float):
    """Up to `size` distinct products of categories `cats` at the merchant's price `level`: (titles, category indices, USD prices, appeal)."""
    titles, pcat, price, hot = [], [], [], []
    seen = set()
    for _ in range(size * 2):
        if len(titles) >= size:
            break
        cat = cats[int(rng.integers(len(cats)))]
        tpls = TEMPLATES[cat]
        tpl = tpls[int(rng.integers(len(tpls)))]
        title, mult, hm = fill_template(tpl, rng)
        q = QUALIFIERS.get(cat)
        if q and not tpl.exact and tpl.price * mult >= 80 and rng.random() < 0.2:
            qt, qm, qh = q[int(rng.integers(len(q)))]
            title, mult, hm = f"{title} {qt}", mult * qm, hm * qh
        if title in seen:
            continue
        seen.add(title)
        if tpl.exact:
            p = round(tpl.price * mult, 2)
        else:
            p = shop_price(tpl.price * mult * level * float(np.exp(rng.normal(0.0, 0.05))))
        titles.append(title)
        pcat.append(CATEGORY_INDEX[cat])
        price.append(p)
        hot.append(tpl.hot * hm)
    return titles, pcat, price, hot
