"""Reference tables of the simulated world: countries, currencies, IP ranges, payment methods, shopping
hours, merchant categories, quantities, refund rates, names, e-mail domains and the fraud mix.

Data only (and the arrays derived from it); the logic that draws from it is in the other modules.
"""

from __future__ import annotations

import numpy as np

from riskops.schema import (
    COUNTRIES,
    CURRENCIES,
    PAYMENT_METHODS,
    PRODUCT_CATEGORIES,
)

SCENARIOS: tuple[str, ...] = ("normal", "fraud_ring", "promotion_season", "price_shift", "new_payment_method")

ROWS_PER_DAY = 2500  # default traffic volume under normal conditions
MIN_DAYS = 7.0
SEC_NS = 10**9
MIN_NS = 60 * SEC_NS
HOUR_NS = 60 * MIN_NS
DAY_NS = 24 * HOUR_NS
MS_NS = 10**6

# ------------------------------------------------------------------------------------------------
# Reference tables
# ------------------------------------------------------------------------------------------------

FX_PER_USD: dict[str, float] = {
    "USD": 1.0,
    "EUR": 0.92,
    "GBP": 0.79,
    "CAD": 1.36,
    "AUD": 1.52,
    "JPY": 150.0,
    "BRL": 5.0,
    "INR": 83.0,
}
assert set(FX_PER_USD) == set(CURRENCIES)

COUNTRY_INFO: dict[str, tuple[float, str, float, tuple[int, ...]]] = {
    # country: (share of users, currency, UTC offset hours, first octets of its residential IPs)
    "US": (0.30, "USD", -5.0, (23, 24, 50, 64, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 96, 98, 99, 104, 108)),
    "GB": (0.09, "GBP", 0.0, (81, 86, 90, 92, 109, 151)),
    "DE": (0.08, "EUR", 1.0, (79, 84, 87, 91, 93)),
    "FR": (0.06, "EUR", 1.0, (78, 80, 82, 83, 88)),
    "ES": (0.04, "EUR", 1.0, (79, 83, 88)),
    "IT": (0.04, "EUR", 1.0, (79, 87, 93, 151)),
    "NL": (0.03, "EUR", 1.0, (77, 82, 84, 145)),
    "CA": (0.05, "CAD", -5.0, (24, 70, 99, 142, 174)),
    "AU": (0.04, "AUD", 10.0, (1, 49, 58, 101, 110)),
    "JP": (0.03, "JPY", 9.0, (27, 36, 60, 126)),
    "BR": (0.04, "BRL", -3.0, (177, 179, 186, 187, 189, 191, 200, 201)),
    "IN": (0.05, "INR", 5.5, (14, 27, 49, 59, 106, 117, 122)),
    "MX": (0.03, "USD", -6.0, (177, 187, 189, 200, 201)),
    "PL": (0.03, "EUR", 1.0, (31, 37, 46, 77, 83)),
    "SE": (0.02, "EUR", 1.0, (31, 78, 81, 83, 90)),
    "NG": (0.01, "USD", 1.0, (41, 102, 105, 154, 197)),
    "RO": (0.015, "EUR", 2.0, (5, 31, 46, 79, 86, 89)),
    "VN": (0.01, "USD", 7.0, (14, 27, 42, 113, 115, 116, 171)),
    "ID": (0.015, "USD", 7.0, (36, 39, 103, 114, 125, 180, 182)),
    "PH": (0.015, "USD", 8.0, (49, 112, 119, 120, 124, 130, 175)),
}
assert tuple(COUNTRY_INFO) == COUNTRIES
COUNTRY_INDEX = {c: i for i, c in enumerate(COUNTRIES)}
COUNTRY_P = np.array([v[0] for v in COUNTRY_INFO.values()])
COUNTRY_P = COUNTRY_P / COUNTRY_P.sum()
COUNTRY_CUR = np.array([CURRENCIES.index(v[1]) for v in COUNTRY_INFO.values()])
COUNTRY_UTC = np.array([v[2] for v in COUNTRY_INFO.values()])
OCTETS = [np.array(v[3]) for v in COUNTRY_INFO.values()]
OCTET_POOL = np.concatenate(OCTETS)
OCTET_OFF = np.cumsum([0] + [len(o) for o in OCTETS[:-1]])
OCTET_LEN = np.array([len(o) for o in OCTETS])
HOSTING_OCTETS = np.array([5, 45, 91, 104, 138, 185, 193, 194, 195])  # data centres, VPNs, proxies

# where fraudsters ship to / operate from, and whose cards they hold
FRAUDSTER_COUNTRIES = {"NG": 0.14, "RO": 0.12, "VN": 0.1, "ID": 0.1, "PH": 0.1, "BR": 0.1, "US": 0.12,
                        "GB": 0.04, "PL": 0.07, "MX": 0.06, "IN": 0.05}  # fmt: skip
VICTIM_CARD_COUNTRIES = {"US": 0.45, "GB": 0.14, "DE": 0.1, "FR": 0.08, "CA": 0.08, "AU": 0.07, "NL": 0.04,
                          "SE": 0.04}  # fmt: skip

CARD_METHODS = ("credit_card", "debit_card", "apple_pay", "google_pay")
PAYMENT_INDEX = {p: i for i, p in enumerate(PAYMENT_METHODS)}
IS_CARD_PM = np.array([p in CARD_METHODS for p in PAYMENT_METHODS])
BASE_PM_P = np.array([{"credit_card": 0.36, "debit_card": 0.2, "paypal": 0.2, "apple_pay": 0.1,
                        "google_pay": 0.08, "bank_transfer": 0.03, "gift_card": 0.03}.get(p, 0.0)
                       for p in PAYMENT_METHODS])  # fmt: skip
BASE_PM_P = BASE_PM_P / BASE_PM_P.sum()

# local-time shopping intensity by hour (0..23) and by weekday (Mon..Sun)
HOUR_W = np.array([0.25, 0.15, 0.1, 0.08, 0.08, 0.12, 0.25, 0.45, 0.65, 0.8, 0.9, 1.0,
                    1.05, 1.0, 0.95, 0.95, 1.0, 1.05, 1.15, 1.3, 1.4, 1.35, 1.0, 0.55])  # fmt: skip
HOUR_P = HOUR_W / HOUR_W.sum()
WEEK_W = np.array([0.95, 0.97, 0.98, 1.0, 1.02, 1.08, 1.15])

CATEGORY_INDEX = {c: i for i, c in enumerate(PRODUCT_CATEGORIES)}
MERCHANT_CAT_P = {"electronics": 0.14, "gift_cards": 0.05, "fashion": 0.17, "home": 0.11, "beauty": 0.09,
                   "sports": 0.07, "toys": 0.06, "books": 0.07, "grocery": 0.08, "jewelry": 0.05,
                   "software": 0.05, "travel": 0.06}  # fmt: skip
# share of orders going to each merchant category (marketplaces get MARKETPLACE_TRAFFIC)
CAT_TRAFFIC = {"electronics": 0.14, "gift_cards": 0.05, "fashion": 0.18, "home": 0.12, "beauty": 0.1,
                "sports": 0.07, "toys": 0.06, "books": 0.07, "grocery": 0.1, "jewelry": 0.03,
                "software": 0.04, "travel": 0.04}  # fmt: skip
MARKETPLACE_TRAFFIC = 0.15
MERCHANT_LABELS: dict[str, tuple[str, ...]] = {
    "electronics": ("Consumer Electronics", "Mobile Phones & Accessories", "Computers & Gaming"),
    "gift_cards": ("Digital Goods & Gift Cards", "Gift Cards & Top-ups"),
    "fashion": ("Apparel & Footwear", "Fashion & Accessories", "Sneakers & Streetwear"),
    "home": ("Home & Kitchen", "Furniture & Home Decor"),
    "beauty": ("Health & Beauty", "Cosmetics & Fragrance"),
    "sports": ("Sporting Goods", "Outdoor & Fitness"),
    "toys": ("Toys & Games", "Collectibles & Hobbies"),
    "books": ("Books & Media", "Bookstore"),
    "grocery": ("Grocery & Household", "Food & Beverage"),
    "jewelry": ("Jewelry & Watches", "Luxury Watches & Jewelry"),
    "software": ("Software & Subscriptions", "Digital Software Keys"),
    "travel": ("Travel & Tickets", "Airline & Hotel Booking", "Event Tickets"),
}
MARKETPLACE_LABELS = ("General Marketplace", "Online Marketplace", "Discount Store")

# quantity distributions (values, probabilities) by category kind
QTY_VALUES = np.array([1, 2, 3, 4, 6])
QTY_P_DEFAULT = np.array([0.88, 0.08, 0.025, 0.01, 0.005])
QTY_P_MULTI = np.array([0.68, 0.19, 0.07, 0.04, 0.02])  # grocery, books, beauty, toys
QTY_P_SINGLE = np.array([0.97, 0.03, 0.0, 0.0, 0.0])  # travel, jewelry, software
REFUND_P = {"fashion": 0.075, "electronics": 0.03, "home": 0.03, "beauty": 0.02, "sports": 0.03,
             "toys": 0.025, "books": 0.015, "grocery": 0.01, "jewelry": 0.04, "software": 0.02,
             "travel": 0.03, "gift_cards": 0.004}  # fmt: skip

FIRST_NAMES = ("james", "mary", "john", "patricia", "robert", "jennifer", "michael", "linda", "david", "sarah",
          "william", "emma", "olivia", "liam", "noah", "ava", "sophia", "lucas", "mia", "ethan", "chloe",
          "lena", "jonas", "hannah", "felix", "marie", "louis", "camille", "hugo", "lucia", "mateo",
          "giulia", "marco", "sofia", "daan", "anna", "lars", "freya", "oliver", "amelia", "jack",
          "isla", "yuki", "haruto", "sakura", "ren", "gabriel", "ana", "pedro", "beatriz", "arjun",
          "priya", "rahul", "ananya", "diego", "valentina", "jakub", "zofia", "chinedu", "amara",
          "andrei", "elena", "minh", "linh", "budi", "putri", "jose", "maria", "jane", "alex")  # fmt: skip
LAST_NAMES = ("smith", "johnson", "williams", "brown", "jones", "garcia", "miller", "davis", "wilson", "taylor",
         "clark", "lewis", "walker", "hall", "young", "king", "wright", "scott", "green", "baker", "evans",
         "thomas", "roberts", "mueller", "schmidt", "schneider", "fischer", "weber", "martin", "bernard",
         "dubois", "moreau", "rossi", "russo", "bianchi", "romano", "de.jong", "jansen", "visser",
         "andersson", "johansson", "nilsson", "tanaka", "suzuki", "sato", "takahashi", "silva",
         "santos", "oliveira", "souza", "sharma", "patel", "singh", "kumar", "hernandez", "lopez",
         "nowak", "kowalski", "okafor", "adeyemi", "popescu", "ionescu", "nguyen", "tran",
         "santoso", "wijaya", "reyes", "cruz", "doe", "lee")  # fmt: skip
DOMAINS = ("example.com", "example.org", "example.net", "mail.example", "inbox.example", "post.example")
DOMAIN_P = np.array([0.34, 0.18, 0.14, 0.14, 0.12, 0.08])
FRAUD_DOMAINS = ("tempmail.example", "quickinbox.example", "mailbox24.example", "example.com",
                  "example.net")  # fmt: skip


def _weighted_countries(d: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Country indices and normalised weights of a {country: weight} table."""
    keys = np.array([COUNTRY_INDEX[k] for k in d])
    p = np.array(list(d.values()), dtype=float)
    return keys, p / p.sum()


FRAUDSTER_C, FRAUDSTER_P = _weighted_countries(FRAUDSTER_COUNTRIES)
VICTIM_C, VICTIM_P = _weighted_countries(VICTIM_CARD_COUNTRIES)

FRAUD_MIX: dict[str, float] = {  # share of fraud rows per typology (per-type episodes differ in size)
    "card_testing": 0.15,
    "abnormal_order": 0.11,
    "payment_mismatch": 0.13,
    "refund_abuse": 0.14,
    "abnormal_goods": 0.13,
    "new_account_burst": 0.12,
    "account_farm": 0.10,
    "account_takeover": 0.12,
}
EPISODE_SIZE: dict[str, tuple[int, int]] = {
    "card_testing": (5, 16),
    "abnormal_order": (2, 6),
    "payment_mismatch": (1, 3),
    "refund_abuse": (4, 9),
    "abnormal_goods": (6, 16),
    "new_account_burst": (4, 10),
    "account_farm": (5, 14),
    "account_takeover": (1, 4),
    "fraud_ring": (4, 12),
}
RING_FRAUD_RATE = 0.035  # extra fraud share the fraud_ring scenario adds on top of config.fraud_rate

QTY_P = np.stack([
    QTY_P_MULTI if c in ("grocery", "books", "beauty", "toys")
    else QTY_P_SINGLE if c in ("travel", "jewelry", "software") else QTY_P_DEFAULT
    for c in PRODUCT_CATEGORIES
])  # fmt: skip
QTY_CUM = np.cumsum(QTY_P, axis=1)
REFUND_BY_CAT = np.array([REFUND_P[c] for c in PRODUCT_CATEGORIES])
