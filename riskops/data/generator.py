"""Built-in synthetic e-commerce traffic with labelled fraud and scripted drift.

The generator builds a small *world* (users with home countries, devices, IPs, cards and usual
payment methods; merchants with a category and a catalog of products with base prices) and then
simulates traffic in it:

* legitimate traffic is vectorised with numpy: daily and weekly seasonality in the user's local
  time, Zipf-like returning users, product choice near each user's usual price level, lognormal
  prices per product, ~3% refunds, and legitimate look-alikes of the fraud patterns (travellers
  and gifts with a country mismatch, households sharing a device, carrier NAT IPs shared by many
  users, bursts of small digital orders, brand-new accounts, users on a new phone, VPN users);
* fraud is injected episode by episode, one function per typology in `riskops.schema.FRAUD_TYPES`,
  each labelled with its `fraud_type`. Fraudsters prefer resellable items ("gift card", "iPhone",
  "GPU", "PlayStation", "limited edition", "prepaid", "license key" ...) *within* categories, so part
  of the signal lives in the product text; legitimate users buy those items too.

Drift scenarios (`SCENARIOS`) change the traffic of a segment: a new fraud ring, a promotion season,
a price shift, a new payment method. `generate_with_drift` appends such a segment after normal traffic
in the same world and records the onset in `df.attrs["drift_onset"]`.

Amounts are in the order currency (the user's local currency); `FX_PER_USD` converts them back.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from riskops.schema import (
    CHANNELS,
    COLUMNS,
    COUNTRIES,
    CURRENCIES,
    PAYMENT_METHODS,
    PRODUCT_CATEGORIES,
    coerce,
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

_COUNTRY_INFO: dict[str, tuple[float, str, float, tuple[int, ...]]] = {
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
assert tuple(_COUNTRY_INFO) == COUNTRIES
_C_IDX = {c: i for i, c in enumerate(COUNTRIES)}
_COUNTRY_P = np.array([v[0] for v in _COUNTRY_INFO.values()])
_COUNTRY_P = _COUNTRY_P / _COUNTRY_P.sum()
_COUNTRY_CUR = np.array([CURRENCIES.index(v[1]) for v in _COUNTRY_INFO.values()])
_COUNTRY_UTC = np.array([v[2] for v in _COUNTRY_INFO.values()])
_OCTETS = [np.array(v[3]) for v in _COUNTRY_INFO.values()]
_OCTET_POOL = np.concatenate(_OCTETS)
_OCTET_OFF = np.cumsum([0] + [len(o) for o in _OCTETS[:-1]])
_OCTET_LEN = np.array([len(o) for o in _OCTETS])
_HOSTING_OCTETS = np.array([5, 45, 91, 104, 138, 185, 193, 194, 195])  # data centres, VPNs, proxies

# where fraudsters ship to / operate from, and whose cards they hold
_FRAUDSTER_COUNTRIES = {"NG": 0.14, "RO": 0.12, "VN": 0.1, "ID": 0.1, "PH": 0.1, "BR": 0.1, "US": 0.12,
                        "GB": 0.04, "PL": 0.07, "MX": 0.06, "IN": 0.05}  # fmt: skip
_VICTIM_CARD_COUNTRIES = {"US": 0.45, "GB": 0.14, "DE": 0.1, "FR": 0.08, "CA": 0.08, "AU": 0.07, "NL": 0.04,
                          "SE": 0.04}  # fmt: skip

_CARD_METHODS = ("credit_card", "debit_card", "apple_pay", "google_pay")
_PM_IDX = {p: i for i, p in enumerate(PAYMENT_METHODS)}
_IS_CARD_PM = np.array([p in _CARD_METHODS for p in PAYMENT_METHODS])
_BASE_PM_P = np.array([{"credit_card": 0.36, "debit_card": 0.2, "paypal": 0.2, "apple_pay": 0.1,
                        "google_pay": 0.08, "bank_transfer": 0.03, "gift_card": 0.03}.get(p, 0.0)
                       for p in PAYMENT_METHODS])  # fmt: skip
_BASE_PM_P = _BASE_PM_P / _BASE_PM_P.sum()

# local-time shopping intensity by hour (0..23) and by weekday (Mon..Sun)
_HOUR_W = np.array([0.25, 0.15, 0.1, 0.08, 0.08, 0.12, 0.25, 0.45, 0.65, 0.8, 0.9, 1.0,
                    1.05, 1.0, 0.95, 0.95, 1.0, 1.05, 1.15, 1.3, 1.4, 1.35, 1.0, 0.55])  # fmt: skip
_HOUR_P = _HOUR_W / _HOUR_W.sum()
_WEEK_W = np.array([0.95, 0.97, 0.98, 1.0, 1.02, 1.08, 1.15])

_CAT_IDX = {c: i for i, c in enumerate(PRODUCT_CATEGORIES)}
_MERCHANT_CAT_P = {"electronics": 0.14, "gift_cards": 0.05, "fashion": 0.17, "home": 0.11, "beauty": 0.09,
                   "sports": 0.07, "toys": 0.06, "books": 0.07, "grocery": 0.08, "jewelry": 0.05,
                   "software": 0.05, "travel": 0.06}  # fmt: skip
# share of orders going to each merchant category (marketplaces get _MARKETPLACE_TRAFFIC)
_CAT_TRAFFIC = {"electronics": 0.14, "gift_cards": 0.05, "fashion": 0.18, "home": 0.12, "beauty": 0.1,
                "sports": 0.07, "toys": 0.06, "books": 0.07, "grocery": 0.1, "jewelry": 0.03,
                "software": 0.04, "travel": 0.04}  # fmt: skip
_MARKETPLACE_TRAFFIC = 0.15
_MERCHANT_LABELS: dict[str, tuple[str, ...]] = {
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
_MARKETPLACE_LABELS = ("General Marketplace", "Online Marketplace", "Discount Store")

# quantity distributions (values, probabilities) by category kind
_QTY_VALUES = np.array([1, 2, 3, 4, 6])
_QTY_P_DEFAULT = np.array([0.88, 0.08, 0.025, 0.01, 0.005])
_QTY_P_MULTI = np.array([0.68, 0.19, 0.07, 0.04, 0.02])  # grocery, books, beauty, toys
_QTY_P_SINGLE = np.array([0.97, 0.03, 0.0, 0.0, 0.0])  # travel, jewelry, software
_REFUND_P = {"fashion": 0.075, "electronics": 0.03, "home": 0.03, "beauty": 0.02, "sports": 0.03,
             "toys": 0.025, "books": 0.015, "grocery": 0.01, "jewelry": 0.04, "software": 0.02,
             "travel": 0.03, "gift_cards": 0.004}  # fmt: skip

_FIRST = ("james", "mary", "john", "patricia", "robert", "jennifer", "michael", "linda", "david", "sarah",
          "william", "emma", "olivia", "liam", "noah", "ava", "sophia", "lucas", "mia", "ethan", "chloe",
          "lena", "jonas", "hannah", "felix", "marie", "louis", "camille", "hugo", "lucia", "mateo",
          "giulia", "marco", "sofia", "daan", "anna", "lars", "freya", "oliver", "amelia", "jack",
          "isla", "yuki", "haruto", "sakura", "ren", "gabriel", "ana", "pedro", "beatriz", "arjun",
          "priya", "rahul", "ananya", "diego", "valentina", "jakub", "zofia", "chinedu", "amara",
          "andrei", "elena", "minh", "linh", "budi", "putri", "jose", "maria", "jane", "alex")  # fmt: skip
_LAST = ("smith", "johnson", "williams", "brown", "jones", "garcia", "miller", "davis", "wilson", "taylor",
         "clark", "lewis", "walker", "hall", "young", "king", "wright", "scott", "green", "baker", "evans",
         "thomas", "roberts", "mueller", "schmidt", "schneider", "fischer", "weber", "martin", "bernard",
         "dubois", "moreau", "rossi", "russo", "bianchi", "romano", "de.jong", "jansen", "visser",
         "andersson", "johansson", "nilsson", "tanaka", "suzuki", "sato", "takahashi", "silva",
         "santos", "oliveira", "souza", "sharma", "patel", "singh", "kumar", "hernandez", "lopez",
         "nowak", "kowalski", "okafor", "adeyemi", "popescu", "ionescu", "nguyen", "tran",
         "santoso", "wijaya", "reyes", "cruz", "doe", "lee")  # fmt: skip
_DOMAINS = ("example.com", "example.org", "example.net", "mail.example", "inbox.example", "post.example")
_DOMAIN_P = np.array([0.34, 0.18, 0.14, 0.14, 0.12, 0.08])
_FRAUD_DOMAINS = ("tempmail.example", "quickinbox.example", "mailbox24.example", "example.com",
                  "example.net")  # fmt: skip

# ------------------------------------------------------------------------------------------------
# Product catalog vocabulary: per category, templates of brand + item + qualifiers with prices.
# Slot options are "text", (text, price multiplier) or (text, price multiplier, fraud appeal multiplier).
# `hot` is the template's appeal to fraudsters (resellable goods), 1 = ordinary.
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Template:
    pattern: str
    price: float
    hot: float = 1.0
    exact: bool = False  # price is the face value (gift cards): no merchant price noise
    slots: dict = field(default_factory=dict)


def _t(pattern: str, price: float, hot: float = 1.0, exact: bool = False, **slots) -> _Template:
    return _Template(pattern, price, hot, exact, slots)


_SIZES = [str(s) for s in (7, 7.5, 8, 8.5, 9, 9.5, 10, 10.5, 11, 12)]
_APPAREL = ["XS", "S", "M", "L", "XL"]
_GC_VALUES = [("10", 10), ("15", 15), ("25", 25), ("50", 50), ("100", 100), ("200", 200)]

_TEMPLATES: dict[str, list[_Template]] = {
    "electronics": [
        _t("Apple iPhone {m} {s} {c}", 799, 4.0,
           m=[("15", 1.0), ("15 Plus", 1.12), ("15 Pro", 1.25), ("15 Pro Max", 1.5), ("14", 0.85)],
           s=[("128GB", 1.0), ("256GB", 1.15), ("512GB", 1.4), ("1TB", 1.7)],
           c=["Black", "Graphite", "Blue Titanium", "Natural Titanium", "Midnight", "Starlight", "Pink"]),
        _t("Samsung Galaxy {m} {s} {c}", 799, 2.5,
           m=[("S24", 1.0), ("S24+", 1.25), ("S24 Ultra", 1.62, 1.5), ("A55 5G", 0.56, 0.5), ("Z Flip5", 1.25)],
           s=[("128GB", 1.0), ("256GB", 1.1), ("512GB", 1.3)],
           c=["Phantom Black", "Titanium Gray", "Cream", "Violet"]),
        _t("{b} GeForce RTX {m} GPU graphics card", 700, 4.0,
           b=["ASUS ROG Strix", "MSI Gaming X Trio", "Gigabyte AORUS", "ZOTAC Twin Edge", "NVIDIA Founders Edition"],
           m=[("4090 24GB", 2.6), ("4080 SUPER 16GB", 1.55), ("4070 Ti SUPER 16GB", 1.2), ("4070 12GB", 0.92),
              ("4060 8GB", 0.45, 0.6)]),
        _t("Sony PlayStation 5 Slim console {e}", 449, 4.0,
           e=[("Disc Edition", 1.1), ("Digital Edition", 1.0), ("Spider-Man 2 bundle", 1.15)]),
        _t("Xbox Series X 1TB console {e}", 499, 3.0, e=["", "Diablo IV bundle", "with extra controller"]),
        _t("Nintendo Switch OLED Model {c}", 349, 2.0, c=["White", "Neon Red/Neon Blue", "Mario Red Edition"]),
        _t("Apple MacBook {m} {r} {s} {c}", 1099, 3.0,
           m=[("Air 13-inch M3", 1.0), ("Air 15-inch M3", 1.18), ("Pro 14-inch M3 Pro", 1.8)],
           r=["8GB RAM", "16GB RAM", "18GB RAM"], s=[("256GB SSD", 1.0), ("512GB SSD", 1.18), ("1TB SSD", 1.4)],
           c=["Space Gray", "Midnight", "Silver", "Starlight"]),
        _t("Apple iPad {m} {s} Wi-Fi {c}", 599, 3.0,
           m=[("10th generation", 0.6), ("Air 11-inch M2", 1.0), ("Pro 13-inch M4", 2.2)],
           s=[("128GB", 1.0), ("256GB", 1.15)], c=["Space Gray", "Blue", "Silver"]),
        _t("Apple AirPods Pro (2nd generation) with MagSafe USB-C case", 249, 3.0),
        _t("Apple Watch Series 9 GPS {z} {c} aluminum case", 399, 2.5, z=["41mm", "45mm"],
           c=["Midnight", "Starlight", "Silver", "(PRODUCT)RED"]),
        _t("Sony WH-1000XM5 wireless noise cancelling headphones {c}", 399, 1.5,
           c=["Black", "Silver", "Midnight Blue"]),
        _t("Bose QuietComfort Ultra earbuds {c}", 299, 1.5, c=["Black", "White Smoke"]),
        _t("Anker {w}W USB-C fast charger {n}", 39, 0.5, w=[("30", 0.6), ("65", 1.0), ("100", 1.4)],
           n=["GaN", "2-port", "3-port"]),
        _t("Logitech {m} wireless mouse {c}", 99, 0.6,
           m=[("MX Master 3S", 1.0), ("M720 Triathlon", 0.5), ("G502 X Lightspeed", 1.4)],
           c=["Graphite", "Pale Gray", "Black"]),
        _t("{b} {z} 4K {k} smart TV {y}", 699, 0.8, b=["Samsung", "LG", "Sony", "TCL", "Hisense"],
           z=[('43"', 0.6), ('55"', 1.0), ('65"', 1.5), ('75"', 2.2)], k=["QLED", "OLED", "LED", "Mini-LED"],
           y=["2024 model", "2023 model"]),
        _t("USB-C to USB-C cable {l} braided {n}", 12, 0.3, l=["1m", "2m", "3m"], n=["2-pack", "black", "white"]),
        _t("Kindle Paperwhite {s} {v}", 149, 1.0, s=["16GB", "32GB"],
           v=["with ads", "without ads", ("Signature Edition", 1.3)]),
        _t("GoPro HERO12 Black action camera {e}", 399, 1.5, e=["", ("creator bundle", 1.4), "with 64GB card"]),
        _t("Canon EOS R50 mirrorless camera {k}", 799, 1.5,
           k=[("body only", 0.85), ("with RF-S 18-45mm kit lens", 1.0), ("content creator kit", 1.15)]),
        _t("{b} wireless gaming headset {c}", 129, 0.8, b=["SteelSeries Arctis Nova 7", "Razer BlackShark V2 Pro",
                                                              "HyperX Cloud III"], c=["Black", "White"]),
    ],
    "gift_cards": [
        _t("{b} digital gift card ${v}", 1.0, 3.0, True,
           b=["Steam", "Amazon", ("Apple", 1.0, 1.3), "Google Play", "PlayStation Store", "Xbox", "Nintendo eShop",
              ("Netflix", 1.0, 0.5), ("Spotify", 1.0, 0.5), ("Uber", 1.0, 0.6), ("Starbucks", 1.0, 0.3),
              "Target", "Walmart", ("Sephora", 1.0, 0.5), ("Airbnb", 1.0, 0.7)],
           v=_GC_VALUES),
        _t("{b} prepaid gift card ${v} {e}", 1.0, 5.0, True, b=["Visa", "Mastercard", "American Express"],
           v=[("25", 30.95), ("50", 56.95), ("100", 106.95), ("200", 207.95), ("500", 507.95)],
           e=["e-code", "physical card", "instant email delivery"]),
        _t("{b} gift card ${v} - email delivery", 1.0, 1.0, True,
           b=["Cheesecake Factory", "Olive Garden", "DoorDash", "Home Depot", "Best Buy", "IKEA"], v=_GC_VALUES),
        _t("{b} {v} top-up code", 1.0, 2.5, True,
           b=["Google Play", "App Store & iTunes", "Steam Wallet", "Xbox Live", "mobile prepaid"],
           v=[("$1", 1.0), ("$2", 2.0), ("$3", 3.0), ("$5", 5.0), ("$10", 10.0)]),
        _t("Roblox {v} Robux digital code", 1.0, 3.5, True,
           v=[("80", 0.99), ("400", 4.99), ("800", 9.99), ("1700", 19.99), ("4500", 49.99), ("10000", 99.99)]),
        _t("Fortnite {v} V-Bucks digital code", 1.0, 3.5, True,
           v=[("1000", 8.99), ("2800", 22.99), ("5000", 36.99), ("13500", 89.99)]),
    ],
    "fashion": [
        _t("Nike {m} running shoes size {z} {c}", 130, 0.8,
           m=[("Air Zoom Pegasus 40", 1.0), ("Invincible 3", 1.38), ("Revolution 7", 0.5), ("Vaporfly 3", 1.9, 1.5)],
           z=_SIZES, c=["black/white", "volt", "triple black", "blue"]),
        _t("Nike Air Jordan 1 Retro High OG {c} size {z} limited edition", 260, 4.0,
           c=["Chicago", "Bred", "University Blue", "Lost & Found"], z=_SIZES),
        _t("Adidas {m} {c} size {z}", 180, 1.0,
           m=[("Ultraboost Light running shoes", 1.0), ("Samba OG sneakers", 0.55), ("Stan Smith sneakers", 0.5),
              ("Yeezy Boost 350 V2 limited edition", 1.6, 3.5)], c=["core black", "cloud white", "onyx"], z=_SIZES),
        _t("Levi's {m} jeans {w}x{l} {c}", 79, 0.3,
           m=[("501 Original Fit", 1.0), ("511 Slim", 0.95), ("Ribcage Straight Ankle", 1.05)],
           w=["28", "30", "31", "32", "33", "34", "36", "38"], l=["30", "32", "34"],
           c=["dark wash", "medium stonewash", "black", "light indigo"]),
        _t("{b} cotton crew neck t-shirt {n} {c} size {z}", 25, 0.2, b=["Uniqlo", "Hanes", "H&M", "Gap"],
           n=[("1-pack", 0.45), ("3-pack", 1.0)], c=["white", "black", "heather grey", "navy"], z=_APPAREL),
        _t("Gucci GG Marmont {m} leather shoulder bag {c}", 2590, 4.0,
           m=[("small matelassé", 1.0), ("mini", 0.75)], c=["black", "dusty pink", "white"]),
        _t("Louis Vuitton Neverfull MM monogram canvas tote", 2030, 4.0),
        _t("The North Face {m} jacket {c} size {z}", 330, 1.0,
           m=[("1996 Retro Nuptse down", 1.0), ("Venture 2 rain", 0.33), ("Denali fleece", 0.55)],
           c=["TNF Black", "Summit Navy", "Gardenia White"], z=_APPAREL),
        _t("Ray-Ban {m} sunglasses {c}", 170, 1.0, m=["Wayfarer", "Aviator Classic", "Clubmaster"],
           c=["black/G-15 green", "gold/green", "tortoise"]),
        _t("Zara {m} {c} size {z}", 119, 0.3,
           m=[("oversized wool blend coat", 1.0), ("linen blend shirt", 0.35), ("high-waist wide leg trousers", 0.45),
              ("midi satin dress", 0.55)], c=["black", "ecru", "camel", "olive"], z=_APPAREL),
        _t("Canada Goose Expedition parka {c} size {z}", 1395, 3.0, c=["black", "navy", "red"], z=_APPAREL),
    ],
    "home": [
        _t("Dyson {m} cordless vacuum {e}", 749, 2.0,
           m=[("V15 Detect", 1.0), ("V12 Detect Slim", 0.87), ("V8 Absolute", 0.6)],
           e=["", ("with extra tools", 1.1), ("Gold edition", 1.15)]),
        _t("KitchenAid Artisan 5-quart tilt-head stand mixer {c}", 449, 1.0,
           c=["Empire Red", "Onyx Black", "Matte Grey", "Pistachio"]),
        _t("Instant Pot Duo {m} pressure cooker {q}", 99, 0.4, m=["7-in-1", "Plus 9-in-1", "Crisp 11-in-1"],
           q=[("3-quart", 0.8), ("6-quart", 1.0), ("8-quart", 1.3)]),
        _t("Nespresso {m} coffee machine by {b} {c}", 179, 0.8,
           m=[("Vertuo Next", 1.0), ("Vertuo Pop", 0.75), ("Lattissima One", 1.7)], b=["De'Longhi", "Breville"],
           c=["matte black", "chrome", "white"]),
        _t("{m} linen duvet cover set {z} {c}", 129, 0.3, m=["stonewashed", "French", "organic"],
           z=[("twin", 0.7), ("full", 0.85), ("queen", 1.0), ("king", 1.2)], c=["white", "sage", "oatmeal", "charcoal"]),
        _t("memory foam pillow {n} {z}", 45, 0.2, n=[("1-pack", 0.55), ("2-pack", 1.0)], z=["standard", "queen", "king"]),
        _t("Le Creuset enameled cast iron Dutch oven {q} {c}", 420, 1.0, q=[("4.5-quart", 0.85), ("5.5-quart", 1.0)],
           c=["Flame", "Marseille", "Cerise", "Sage"]),
        _t("Philips Hue {m}", 199, 0.6, m=[("White and Color Ambiance starter kit 3 bulbs + bridge", 1.0),
                                           ("Play light bar 2-pack", 0.65), ("smart bulb A19 4-pack", 0.5)]),
        _t("iRobot Roomba {m} robot vacuum", 599, 1.2, m=[("j7+ self-emptying", 1.0), ("Combo j9+", 1.5), ("694", 0.45)]),
        _t("{b} {n}-piece nonstick cookware set {c}", 149, 0.4, b=["T-fal", "Calphalon", "HexClad"],
           n=[("10", 1.0), ("12", 1.2), ("14", 1.4)], c=["black", "grey", "copper"]),
    ],
    "beauty": [
        _t("Dyson Airwrap {m} multi-styler {c}", 599, 3.0, m=[("Complete Long", 1.0), ("Origin", 0.83)],
           c=["Nickel/Copper", "Ceramic Pink", "Prussian Blue"]),
        _t("La Mer Crème de la Mer moisturizing cream {s}", 380, 2.0, s=[("30ml", 0.5), ("60ml", 1.0), ("100ml", 1.55)]),
        _t("Chanel {m} eau de parfum {s}", 165, 2.0, m=["No.5", "Coco Mademoiselle", "Chance"],
           s=[("50ml", 0.7), ("100ml", 1.0)]),
        _t("CeraVe {m} {s}", 19, 0.2, m=["moisturizing cream", "hydrating facial cleanser", "daily moisturizing lotion"],
           s=["16oz", "19oz", "12oz"]),
        _t("The Ordinary {m} 30ml", 9, 0.2,
           m=["Niacinamide 10% + Zinc 1% serum", "Hyaluronic Acid 2% + B5", "Retinol 0.5% in Squalane"]),
        _t("Olaplex No.{n} {m}", 30, 0.3, n=["3", "4", "5", "7"], m=["hair perfector", "bond maintenance treatment"]),
        _t("MAC {m} lipstick {c}", 23, 0.3, m=["Matte", "Retro Matte", "Satin"],
           c=["Ruby Woo", "Velvet Teddy", "Chili", "Mehr"]),
        _t("Charlotte Tilbury {m}", 45, 0.5, m=[("Pillow Talk lipstick", 0.8), ("Magic Cream 50ml", 2.2),
                                               ("Airbrush Flawless setting spray", 0.85)]),
        _t("Foreo Luna 4 facial cleansing device {c}", 199, 1.0, c=["Pearl Pink", "Midnight", "Aquamarine"]),
    ],
    "sports": [
        _t("Garmin {m} GPS {k} watch {c}", 449, 2.0,
           m=[("Forerunner 265", 1.0), ("Fenix 7 Pro Solar", 1.8), ("Venu 3", 1.0), ("Instinct 2", 0.6)],
           k=["running", "multisport", "smart"], c=["black", "whitestone", "aqua"]),
        _t("Yeti Rambler {s} tumbler with MagSlider lid {c}", 38, 0.3, s=[("20oz", 0.9), ("30oz", 1.0)],
           c=["navy", "black", "seafoam"]),
        _t("Wilson {m} tennis racket {g}", 229, 0.5, m=["Pro Staff 97 v14", "Blade 98 v9", "Clash 100 v2"],
           g=["grip 2", "grip 3", "grip 4"]),
        _t("{b} yoga mat {k} non-slip {c}", 68, 0.2, b=["Manduka PRO", "Lululemon The Mat", "Gaiam Premium"],
           k=["6mm", "5mm", "4mm"], c=["black", "sage", "lavender"]),
        _t("Bowflex SelectTech {m} adjustable dumbbells pair", 429, 0.8, m=[("552", 1.0), ("1090", 1.9)]),
        _t("Trek {m} mountain bike size {z} {c}", 699, 2.0,
           m=[("Marlin 5", 1.0), ("Marlin 7", 1.4), ("Fuel EX 8", 4.5, 1.5)], z=["S", "M", "L", "XL"],
           c=["matte black", "crimson", "satin blue"]),
        _t("Callaway Paradym {m}", 599, 1.0, m=[("driver", 1.0), ("fairway wood", 0.6), ("iron set 5-PW", 2.3)]),
        _t("Hydro Flask {s} wide mouth water bottle {c}", 45, 0.2, s=[("32oz", 1.0), ("40oz", 1.15)],
           c=["black", "pacific", "white"]),
        _t("Peloton Bike+ {e}", 2495, 1.5, e=["", "essentials package", "with shoes and weights"]),
    ],
    "toys": [
        _t("LEGO {m}", 199, 1.0,
           m=[("Star Wars Millennium Falcon 75192 Ultimate Collector Series", 4.27, 3.0),
              ("Technic Lamborghini Sian FKP 37 42115", 2.3, 2.0), ("Icons Botanical Bouquet 10280", 0.3),
              ("City Fire Station 60320", 0.55), ("Harry Potter Hogwarts Castle 71043", 2.35, 2.0),
              ("Creator 3-in-1 Space Shuttle 31134", 0.06)]),
        _t("Pokemon TCG {m} booster box {n} packs", 160, 4.0,
           m=["Scarlet & Violet 151", "Paldean Fates", "Obsidian Flames"], n=[("36", 1.0), ("18", 0.55)]),
        _t("Barbie {m}", 60, 0.3, m=[("Dreamhouse 2023", 3.3), ("Fashionistas doll", 0.2), ("Camper playset", 1.2)]),
        _t("Hot Wheels {m}", 22, 0.2, m=[("20-car gift pack", 1.0), ("Monster Trucks arena", 2.0),
                                         ("track builder set", 1.4)]),
        _t("Nerf {m} blaster", 30, 0.2, m=["Elite 2.0 Commander", "Fortnite BASR-L", "Ultra Strike"]),
        _t("Funko Pop! {m} vinyl figure {e}", 14, 1.0, m=["Marvel Spider-Man", "Star Wars Grogu", "Harry Potter Hedwig"],
           e=[("", 1.0, 0.5), ("limited edition", 2.5, 4.0), ("Chase variant", 3.0, 4.0)]),
        _t("Play-Doh {n}-pack modeling compound", 9, 0.1, n=[("10", 1.0), ("24", 2.0)]),
    ],
    "books": [
        _t("{b} {f}", 16, 0.2,
           b=["Atomic Habits by James Clear", "The Midnight Library by Matt Haig", "Project Hail Mary by Andy Weir",
              "Sapiens by Yuval Noah Harari", "Dune by Frank Herbert", "The Silent Patient by Alex Michaelides",
              "Educated by Tara Westover", "Where the Crawdads Sing by Delia Owens", "1984 by George Orwell",
              "Thinking, Fast and Slow by Daniel Kahneman"],
           f=[("paperback", 1.0), ("hardcover", 1.6), ("Kindle edition", 0.55), ("audiobook CD", 1.8)]),
        _t("{b} box set {f}", 60, 0.4, b=["Harry Potter 1-7", "The Hunger Games trilogy", "A Song of Ice and Fire 5-book",
                                          "The Lord of the Rings 4-book"], f=[("paperback", 1.0), ("hardcover", 1.8)]),
        _t("{b} signed first edition {f}", 180, 3.0, b=["Dune by Frank Herbert", "Project Hail Mary by Andy Weir",
                                                         "The Shining by Stephen King"],
           f=[("hardcover", 1.0), ("limited edition slipcase", 1.6)]),
        _t("{b} coloring book for adults {f}", 12, 0.1, b=["mandala", "botanical", "ocean animals"],
           f=["paperback", "spiral-bound"]),
    ],
    "grocery": [
        _t("Lavazza {m} whole bean coffee {s}", 22, 0.2, m=["Super Crema", "Qualita Oro", "Espresso Italiano"],
           s=[("1kg", 1.0), ("2.2lb", 1.0), ("500g", 0.55)]),
        _t("organic extra virgin olive oil {s} {b}", 15, 0.1, s=[("500ml", 0.6), ("1L", 1.0), ("3L tin", 2.4)],
           b=["cold pressed", "Italian", "Greek"]),
        _t("Kirkland Signature {m}", 20, 0.2, m=[("mixed nuts 2.5lb", 1.0), ("organic maple syrup 1L", 0.7),
                                                  ("Colombian coffee 3lb", 0.8)]),
        _t("Optimum Nutrition Gold Standard 100% Whey protein {s} {f}", 75, 0.4, s=[("2lb", 0.5), ("5lb", 1.0)],
           f=["double rich chocolate", "vanilla ice cream", "strawberry"]),
        _t("Huggies {m} diapers size {z} {n} count", 45, 0.2, m=["Little Movers", "Snug & Dry", "Special Delivery"],
           z=["3", "4", "5", "6"], n=[("84", 0.8), ("120", 1.0)]),
        _t("Tide {m} laundry detergent {n}", 25, 0.2, m=["PODS", "Free & Gentle", "Original liquid"],
           n=[("81 count", 1.0), ("42 count", 0.55), ("92 fl oz", 0.6)]),
        _t("{b} sparkling water {n}-pack {f}", 6, 0.05, b=["LaCroix", "San Pellegrino", "Bubly"],
           n=[("12", 1.0), ("24", 1.8)], f=["lime", "grapefruit", "unflavored"]),
        _t("Dom Perignon {y} vintage champagne 750ml {e}", 260, 2.0, y=["2012", "2013"], e=["", "gift box"]),
    ],
    "jewelry": [
        _t("Pandora {m} sterling silver {k}", 75, 0.4, m=["Moments snake chain", "heart clasp", "Timeless pave"],
           k=[("charm bracelet", 1.0), ("ring", 0.8), ("necklace", 1.1)]),
        _t("Tiffany & Co. {m}", 350, 3.0, m=[("Return to Tiffany heart tag pendant", 1.0), ("T1 ring 18k gold", 7.0),
                                              ("Elsa Peretti Open Heart necklace", 1.1)]),
        _t("14k {c} gold {m}", 280, 2.0, c=["yellow", "white", "rose"],
           m=[("hoop earrings 20mm", 1.0), ("cuban link chain 20-inch", 4.0), ("tennis bracelet 2ct lab-grown diamond", 6.0)]),
        _t("Rolex {m} {s} {r}", 10500, 4.0, m=[("Submariner Date", 1.0), ("Datejust 36", 0.85), ("GMT-Master II", 1.4)],
           s=["41mm", "40mm", "36mm"], r=["oystersteel", "two-tone", "with box and papers"]),
        _t("Cartier {m}", 7000, 4.0, m=[("Love bracelet 18k yellow gold", 1.0), ("Juste un Clou ring", 0.4),
                                       ("Santos de Cartier watch medium", 1.1)]),
        _t("Swarovski {m} {c}", 129, 0.5, m=["Millenia necklace", "Constella bracelet", "Stilla earrings"],
           c=["white", "rose gold tone", "rhodium plated"]),
        _t("{ct} carat lab-grown diamond {m} 14k white gold", 1200, 3.0,
           ct=[("0.5", 0.5), ("1", 1.0), ("1.5", 1.6), ("2", 2.4)], m=["solitaire ring", "stud earrings", "pendant"]),
        _t("Casio G-Shock {m} watch", 99, 0.4, m=["GA2100 CasiOak", "DW5600 classic", "GW-M5610 solar"]),
    ],
    "software": [
        _t("Microsoft 365 {m} 12-month subscription {d}", 99, 1.0, m=[("Family", 1.0), ("Personal", 0.7)],
           d=["digital download", "auto-renewal"]),
        _t("Adobe Creative Cloud {m} annual plan", 659, 2.0,
           m=[("All Apps", 1.0), ("Photography 20GB", 0.18), ("Acrobat Pro", 0.36)]),
        _t("Windows 11 {m} license key {d}", 199, 4.0, m=[("Pro", 1.0), ("Home", 0.7)],
           d=["digital delivery", "instant email delivery", ("retail box", 1.0, 0.5)]),
        _t("Norton 360 Deluxe {n} devices 1-year", 49, 0.3, n=["3", "5"]),
        _t("{g} {p} game key {e}", 59, 3.0,
           g=["Elden Ring", "Baldur's Gate 3", "Cyberpunk 2077", "Call of Duty: Modern Warfare III", "EA Sports FC 24"],
           p=["Steam", "PlayStation", "Xbox"],
           e=[("standard edition", 1.0), ("deluxe edition", 1.4), ("ultimate edition", 1.7)]),
        _t("Xbox Game Pass Ultimate {n}-month prepaid code", 50, 4.0, n=[("1", 0.33), ("3", 1.0), ("12", 3.3)]),
        _t("NordVPN {m} plan", 99, 0.8, m=[("2-year Standard", 1.0), ("1-year Complete", 0.8)]),
        _t("JetBrains {m} annual subscription", 289, 0.8, m=["All Products Pack", "IntelliJ IDEA Ultimate", "PyCharm"]),
    ],
    "travel": [
        _t("round-trip flight {c} {r} {d}", 650, 3.0,
           c=[("economy", 1.0), ("premium economy", 1.6), ("business class", 3.5)],
           r=[("JFK-LHR", 1.2), ("LAX-NRT", 1.5), ("SFO-CDG", 1.3), ("ORD-CUN", 0.6), ("LHR-DXB", 1.0), ("FRA-BKK", 1.3),
              ("GRU-MIA", 1.0), ("DEL-SIN", 0.6), ("MAD-BOG", 1.1)], d=["flexible", "non-refundable", "basic fare"]),
        _t("one-way flight economy {r} e-ticket", 240, 3.0,
           r=[("LGA-MIA", 0.7), ("LHR-BCN", 0.6), ("CDG-FCO", 0.6), ("SYD-MEL", 0.5), ("LAX-HNL", 1.2), ("DXB-LOS", 2.0)]),
        _t("Hotel {n} nights {city} {r}", 450, 1.0, n=[("2", 0.67), ("3", 1.0), ("5", 1.67)],
           city=["Paris", "New York", "Tokyo", "Barcelona", "Dubai", "Bali", "London"],
           r=[("standard double room", 1.0), ("deluxe room", 1.3), ("suite with breakfast", 2.0)]),
        _t("Eurail Global Pass {d} in 1 month {c}", 400, 1.0, d=[("4 days", 0.75), ("7 days", 1.0), ("15 days", 1.5)],
           c=["2nd class", ("1st class", 1.3)]),
        _t("airport lounge day pass {a}", 45, 0.5, a=["JFK Terminal 4", "LHR Terminal 5", "SIN Terminal 3"]),
        _t("car rental {d} days {c} {city}", 260, 1.0, d=[("3", 0.65), ("5", 1.0), ("7", 1.35)],
           c=["compact", "SUV", "convertible"], city=["Orlando", "Lisbon", "Los Angeles", "Munich"]),
        _t("annual multi-trip travel insurance {p}", 199, 0.3, p=["individual", ("family", 1.6)]),
        _t("{e} concert tickets x2 {v}", 380, 3.0, e=["Taylor Swift", "Coldplay", "Beyonce", "Ed Sheeran"],
           v=["floor standing", "lower bowl", ("VIP package resale", 2.5)]),
    ],
}
assert set(_TEMPLATES) == set(PRODUCT_CATEGORIES)

_QUALIFIERS: dict[str, list[tuple[str, float, float]]] = {
    "electronics": [("Unlocked", 1.0, 1.6), ("(Renewed)", 0.72, 0.9), ("International Version", 0.95, 1.5),
                    ("with 2-year protection plan", 1.08, 0.8), ("bundle", 1.1, 1.2)],
    "fashion": [("- new with tags", 1.0, 1.0), ("gift box", 1.05, 1.0), ("limited edition", 1.4, 2.2)],
    "home": [("(Renewed)", 0.75, 1.0), ("2024 edition", 1.0, 1.0)],
    "beauty": [("travel size", 0.45, 0.8), ("gift set", 1.2, 1.3), ("limited edition", 1.25, 2.0)],
    "sports": [("2024 model", 1.0, 1.0), ("(Renewed)", 0.75, 1.0)],
    "toys": [("gift wrapped", 1.05, 1.0), ("limited edition", 1.5, 2.5)],
    "jewelry": [("gift box", 1.0, 1.0), ("with certificate", 1.05, 1.3)],
    "software": [("global activation", 1.0, 1.6), ("1 PC lifetime", 1.0, 1.4)],
}

# the new fraud ring's vocabulary: products that no merchant in the base world sells
_RING_TEMPLATES: list[_Template] = [
    _t("DJI {m} drone {e}", 999, 4.0, m=[("Mini 4 Pro", 1.0), ("Air 3", 1.1), ("Avata 2 FPV", 1.0), ("Mavic 3 Classic", 1.6)],
       e=[("Fly More Combo", 1.25), ("with RC 2 controller", 1.1), ("", 1.0)]),
    _t("Meta Quest 3 {s} VR headset {e}", 499, 4.0, s=[("128GB", 1.0), ("512GB", 1.3)], e=["", "Asgard's Wrath 2 bundle"]),
    _t("Apple Vision Pro {s} spatial computer", 3499, 4.0, s=[("256GB", 1.0), ("512GB", 1.06), ("1TB", 1.11)]),
    _t("{b} crypto hardware wallet {e}", 149, 4.0, b=[("Ledger Nano X", 1.0), ("Trezor Model T", 1.4), ("Ledger Stax", 2.7)],
       e=["bundle", "3-pack", ""]),
    _t("Steam Deck OLED {s} handheld {e}", 549, 4.0, s=[("512GB", 1.0), ("1TB", 1.2)], e=["", "Limited Edition White"]),
    _t("Starlink Standard kit satellite internet dish {e}", 499, 4.0, e=["", "with pipe adapter"]),
]
_RING_MERCHANT_LABEL = "Drones & Smart Gadgets"

_PROMO_WORDS = (("Black Friday deal: ", ""), ("", " - Cyber Monday special"), ("[SALE] ", ""),
                ("", " - holiday bundle offer"), ("Limited-time offer: ", ""), ("", " (clearance)"))  # fmt: skip

_FRAUD_MIX: dict[str, float] = {  # share of fraud rows per typology (per-type episodes differ in size)
    "card_testing": 0.15,
    "abnormal_order": 0.11,
    "payment_mismatch": 0.13,
    "refund_abuse": 0.14,
    "abnormal_goods": 0.13,
    "new_account_burst": 0.12,
    "account_farm": 0.10,
    "account_takeover": 0.12,
}
_EPISODE_SIZE: dict[str, tuple[int, int]] = {
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

# ------------------------------------------------------------------------------------------------
# Public API
# ------------------------------------------------------------------------------------------------


@dataclass
class GeneratorConfig:
    rows: int = 20_000
    seed: int = 7
    start: str = "2026-01-01"  # UTC start of the traffic
    days: float | None = None  # span; default derived from rows (~rows/2500 per day, min 7 days)
    fraud_rate: float = 0.015  # target share of fraud rows (0.005-0.03 realistic)
    n_users: int | None = None  # default derived from rows
    n_merchants: int | None = None
    scenario: str = "normal"  # one of SCENARIOS

    def validate(self) -> None:
        if self.rows < 1:
            raise ValueError(f"rows must be >= 1, got {self.rows}")
        if not 0.0 <= self.fraud_rate < 0.5:
            raise ValueError(f"fraud_rate must be in [0, 0.5), got {self.fraud_rate}")
        if self.scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {self.scenario!r}; expected one of {', '.join(SCENARIOS)}")
        if self.days is not None and self.days <= 0:
            raise ValueError(f"days must be > 0, got {self.days}")


def to_usd(amount: pd.Series | np.ndarray, currency: pd.Series | np.ndarray) -> np.ndarray:
    """Convert order-currency amounts to USD with the generator's fixed rates."""
    rate = pd.Series(np.asarray(currency, dtype=object)).map(FX_PER_USD).to_numpy(dtype=float)
    return np.asarray(amount, dtype=float) / rate


def generate(config: GeneratorConfig) -> pd.DataFrame:
    """One frame of traffic under `config.scenario`, labelled, sorted by event time."""
    config.validate()
    world = _World(config)
    start_ns = _parse_start(config.start)
    days = _default_days(config) / _volume_factor(config.scenario) if config.days is None else config.days
    seg = _Segment(world, config.scenario, start_ns, int(days * DAY_NS), config.rows, config.fraud_rate, 0)
    df = _to_frame(seg.run(), world.key, 0)
    df.attrs["scenario"] = config.scenario
    return df


def product_catalogue(config: GeneratorConfig) -> pd.DataFrame:
    """Every merchant's products in the world of `config` (what a shop's product feed would list).

    Columns: merchant_id, merchant_category, product_title, product_category. A product that
    appears only with a drift scenario (the fraud ring's new merchant) is not in it: that world
    is built when the drift starts.
    """
    config.validate()
    w = _World(config)
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
    world = _World(base)
    start_ns = _parse_start(base.start)
    base_days = _default_days(base) / _volume_factor(base.scenario) if base.days is None else base.days
    base_span = int(base_days * DAY_NS)
    seg1 = _Segment(world, base.scenario, start_ns, base_span, base.rows, base.fraud_rate, 0)
    cols1 = seg1.run()
    rate_per_day = base.rows / base_days * _volume_factor(scenario) / _volume_factor(base.scenario)
    drift_span = int(max(drift_rows / rate_per_day, 1.0 / 24) * DAY_NS)
    onset_ns = start_ns + base_span
    seg2 = _Segment(world, scenario, onset_ns, drift_span, drift_rows, base.fraud_rate, 1)
    cols2 = seg2.run()
    merged = {k: np.concatenate([cols1[k], cols2[k]]) for k in cols1}
    df = _to_frame(merged, world.key, 0)
    df.attrs["scenario"] = scenario
    df.attrs["drift_onset"] = pd.Timestamp(onset_ns, tz="UTC").isoformat()
    return df


def write_transactions(df: pd.DataFrame, path: str | Path) -> Path:
    """Write transactions to .parquet or .jsonl (chosen by the file extension)."""
    p = Path(path)
    ext = p.suffix.lower()
    if ext not in (".parquet", ".jsonl"):
        raise ValueError(f"unsupported transactions file extension {ext or '(none)'!r} for {p}; use .parquet or .jsonl")
    p.parent.mkdir(parents=True, exist_ok=True)
    out = coerce(df)
    if ext == ".parquet":
        out.to_parquet(p, index=False)
    else:
        out = out.copy()
        ts = out["event_timestamp"] if "event_timestamp" in out.columns else None
        if ts is not None:
            out["event_timestamp"] = ts.dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        out.to_json(p, orient="records", lines=True, force_ascii=False, double_precision=15)
    return p


def read_transactions(path: str | Path) -> pd.DataFrame:
    """Read a file written by `write_transactions`; columns get their schema dtypes."""
    p = Path(path)
    ext = p.suffix.lower()
    if ext == ".parquet":
        df = pd.read_parquet(p)
    elif ext == ".jsonl":
        df = pd.read_json(p, orient="records", lines=True, dtype=False, convert_dates=False)
        for c in ("card_bin", "card_number_masked"):  # keep '' (json reads empty strings back as they are)
            if c in df.columns:
                df[c] = df[c].fillna("").astype(str)
    else:
        raise ValueError(f"unsupported transactions file extension {ext or '(none)'!r} for {p}; use .parquet or .jsonl")
    ordered = [c for c in COLUMNS if c in df.columns] + [c for c in df.columns if c not in COLUMNS]
    return coerce(df[ordered])


# ------------------------------------------------------------------------------------------------
# Internals
# ------------------------------------------------------------------------------------------------


def _parse_start(start: str) -> int:
    ts = pd.Timestamp(start)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(ts.value)


def _default_days(config: GeneratorConfig) -> float:
    return max(MIN_DAYS, config.rows / ROWS_PER_DAY)


def _volume_factor(scenario: str) -> float:
    return 2.5 if scenario == "promotion_season" else 1.0


def _key(*parts: object) -> int:
    return zlib.crc32("|".join(str(p) for p in parts).encode())


_U64 = np.uint64


def _mix(x: np.ndarray, key: int, bits: int) -> np.ndarray:
    """A keyed bijection on [0, 2**bits): distinct inputs give distinct, random-looking outputs."""
    mask = _U64((1 << bits) - 1)
    half = _U64(bits // 2)
    v = (np.asarray(x, dtype=np.uint64) + _U64(key % (1 << bits))) & mask
    for mult in (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB):
        v ^= v >> half
        v = (v * _U64((mult & ((1 << bits) - 1)) | 1)) & mask
    v ^= v >> half
    return v


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def _hex(values: np.ndarray, width: int) -> np.ndarray:
    v = np.asarray(values, dtype=np.uint64)
    shifts = (np.arange(width - 1, -1, -1, dtype=np.uint64) * _U64(4))[None, :]
    digits = ((v[:, None] >> shifts) & _U64(15)).astype(np.intp)
    chars = np.ascontiguousarray(_HEX[digits])
    return chars.view(f"S{width}").ravel().astype(f"U{width}")


def _ip_strings(o1: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = len(o1)
    o2, o3 = rng.integers(0, 256, (2, n))
    o4 = rng.integers(1, 255, n)
    parts = [np.asarray(o1).astype(str), o2.astype(str), o3.astype(str), o4.astype(str)]
    out = parts[0]
    for p in parts[1:]:
        out = np.char.add(np.char.add(out, "."), p)
    return out.astype(object)


def _residential_ips(rng: np.random.Generator, country: np.ndarray) -> np.ndarray:
    country = np.asarray(country, dtype=np.intp)
    pick = (rng.random(len(country)) * _OCTET_LEN[country]).astype(np.intp)
    return _ip_strings(_OCTET_POOL[_OCTET_OFF[country] + pick], rng)


def _hosting_ips(rng: np.random.Generator, n: int) -> np.ndarray:
    return _ip_strings(_HOSTING_OCTETS[rng.integers(0, len(_HOSTING_OCTETS), n)], rng)


def _choice_p(d: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    keys = np.array([_C_IDX[k] for k in d])
    p = np.array(list(d.values()), dtype=float)
    return keys, p / p.sum()


_FRAUDSTER_C, _FRAUDSTER_P = _choice_p(_FRAUDSTER_COUNTRIES)
_VICTIM_C, _VICTIM_P = _choice_p(_VICTIM_CARD_COUNTRIES)


def _round_money(x: np.ndarray, currency_idx: np.ndarray) -> np.ndarray:
    whole = np.isin(currency_idx, [CURRENCIES.index("JPY")])
    out = np.round(x, 2)
    out[whole] = np.maximum(np.round(x[whole]), 1.0)
    return np.maximum(out, 0.01)


class _World:
    """Users, devices, IPs, cards, merchants and their catalogs: everything that persists over time."""

    def __init__(self, config: GeneratorConfig):
        self.config = config
        self.key = _key("riskops-generator", config.seed)
        rng = np.random.default_rng([config.seed, 1])
        self.start_ns = _parse_start(config.start)
        n_users = config.n_users or max(300, config.rows // 6)
        n_merchants = config.n_merchants or int(np.clip(config.rows // 200, 40, 600))
        self._user_counter = 0
        self._device_counter = 0
        self._card_counter = 0
        self._merchant_counter = 0
        self._build_bins(rng)
        self._build_merchants(rng, n_merchants)
        self.users: dict[str, np.ndarray] = {}
        days = _default_days(config) if config.days is None else config.days
        self.add_users(rng, n_users, self.start_ns, int(days * DAY_NS), new_share=0.08)
        n_kiosk = max(3, n_users // 800)
        self.kiosk_dev = self.device_ids(n_kiosk)
        self.kiosk_ip = _residential_ips(rng, rng.choice(len(COUNTRIES), size=n_kiosk, p=_COUNTRY_P))

    # -- ids ---------------------------------------------------------------------------------------
    def user_ids(self, n: int) -> np.ndarray:
        idx = np.arange(self._user_counter, self._user_counter + n)
        self._user_counter += n
        num = _mix(idx, self.key, 26).astype(np.int64)
        return np.char.add("U", np.char.zfill(num.astype(str), 8)).astype(object)

    def device_ids(self, n: int) -> np.ndarray:
        idx = np.arange(self._device_counter, self._device_counter + n)
        self._device_counter += n
        return np.char.add("dev_", _hex(_mix(idx, self.key ^ 0x5A5A, 48), 12)).astype(object)

    def merchant_ids(self, n: int) -> np.ndarray:
        idx = np.arange(self._merchant_counter, self._merchant_counter + n)
        self._merchant_counter += n
        num = _mix(idx, self.key ^ 0x3C3C, 18).astype(np.int64)
        return np.char.add("M", np.char.zfill(num.astype(str), 6)).astype(object)

    # -- cards -------------------------------------------------------------------------------------
    def _build_bins(self, rng: np.random.Generator) -> None:
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
        cats = list(_MERCHANT_CAT_P)
        p = np.array(list(_MERCHANT_CAT_P.values()))
        main = rng.choice(len(cats), size=n, p=p / p.sum())
        market = rng.random(n) < 0.08
        titles, pcat, price, hot, owner = [], [], [], [], []
        labels, offsets, sizes = [], [], []
        for m in range(n):
            cat = cats[main[m]]
            if market[m]:
                chosen = list(rng.choice(cats, size=int(rng.integers(4, 7)), replace=False))
                size = int(rng.integers(60, 121))
                labels.append(_MARKETPLACE_LABELS[int(rng.integers(len(_MARKETPLACE_LABELS)))])
            else:
                chosen = [cat]
                size = int(rng.integers(12, 51))
                labels.append(_MERCHANT_LABELS[cat][int(rng.integers(len(_MERCHANT_LABELS[cat])))])
            level = float(np.exp(rng.normal(0.0, 0.1)))
            offsets.append(len(titles))
            t, c, pr, h = _make_products(rng, chosen, size, level)
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
            share = _MARKETPLACE_TRAFFIC if g < 0 else _CAT_TRAFFIC[cats[g]] * (1 - _MARKETPLACE_TRAFFIC)
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
            tpl = _RING_TEMPLATES[int(rng.integers(len(_RING_TEMPLATES)))]
            title, mult, hm = _fill(tpl, rng)
            t.append(title)
            pr.append(_price(tpl.price * mult * float(np.exp(rng.normal(0, 0.05)))))
            h.append(tpl.hot * hm)
        self.m_id = np.concatenate([self.m_id, self.merchant_ids(1)])
        self.m_label = np.append(self.m_label, _RING_MERCHANT_LABEL)
        self.m_off = np.append(self.m_off, len(self.p_title))
        self.m_size = np.append(self.m_size, len(t))
        self.m_pop = np.append(self.m_pop, np.median(self.m_pop))
        self.m_ring = np.append(self.m_ring, True)
        self.p_title = np.concatenate([self.p_title, np.array(t, dtype=object)])
        self.p_cat = np.concatenate([self.p_cat, np.full(len(t), _CAT_IDX["electronics"])])
        self.p_price = np.concatenate([self.p_price, pr])
        self.p_hot = np.concatenate([self.p_hot, h])
        self.p_merchant = np.concatenate([self.p_merchant, np.full(len(t), m)])
        self.p_ring = np.concatenate([self.p_ring, np.ones(len(t), dtype=bool)])
        return m

    # -- users -------------------------------------------------------------------------------------
    def add_users(self, rng: np.random.Generator, n: int, window_start: int, window_span: int, new_share: float,
                  activity_boost: float = 1.0) -> np.ndarray:
        """Create `n` users; `new_share` of them sign up inside the window, the rest before it."""
        home = rng.choice(len(COUNTRIES), size=n, p=_COUNTRY_P)
        expat = rng.random(n) < 0.02
        billing = np.where(expat, rng.choice(len(COUNTRIES), size=n, p=_COUNTRY_P), home)
        is_new = rng.random(n) < new_share
        age_days = np.where(rng.random(n) < 0.1, rng.uniform(0, 30, n), np.exp(rng.normal(6.2, 0.9, n)))
        age_days = np.clip(age_days, 0, 3650)
        signup = window_start - (age_days * DAY_NS).astype(np.int64)
        signup = np.where(is_new, window_start + (rng.random(n) * window_span * 0.95).astype(np.int64), signup)
        n_dev = 1 + (rng.random(n) < 0.45)
        devices = self.device_ids(2 * n).reshape(n, 2)
        dev_channel = rng.choice(len(CHANNELS), size=(n, 2), p=[0.3, 0.35, 0.35])
        dev_channel[:, 1] = np.where(rng.random(n) < 0.6, 0, dev_channel[:, 1])  # the second one is often a laptop
        ips = np.stack([_residential_ips(rng, home), _residential_ips(rng, home)], axis=1)
        n_ip = 1 + (rng.random(n) < 0.5)
        pm = rng.choice(len(PAYMENT_METHODS), size=n, p=_BASE_PM_P)
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
                pool_c = rng.choice(len(COUNTRIES), size=pool_size, p=_COUNTRY_P)
                pool = _residential_ips(rng, pool_c)
                pick = rng.integers(0, pool_size, len(nat))
                ips[nat, 1] = pool[pick]
                n_ip[nat] = 2
        first = rng.integers(0, len(_FIRST), n)
        last = rng.integers(0, len(_LAST), n)
        emails = _emails(rng, first, last, fraud=False)
        new = {
            "id": self.user_ids(n),
            "email": emails,
            "home": home,
            "billing": billing,
            "currency": _COUNTRY_CUR[billing],
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
            home = int(rng.choice(len(COUNTRIES), p=_COUNTRY_P)) if rng.random() < 0.6 else int(
                rng.choice(_FRAUDSTER_C, p=_FRAUDSTER_P))
        first = rng.integers(0, len(_FIRST), 1)
        last = rng.integers(0, len(_LAST), 1)
        email = _emails(rng, first, last, fraud=email_style == "fraud")[0]
        cb, cm = self.cards(rng, np.array([home]))
        return {
            "user_id": self.user_ids(1)[0],
            "email": email,
            "home": home,
            "billing": home,
            "currency": int(_COUNTRY_CUR[home]),
            "signup": int(signup),
            "pm": int(rng.choice(len(PAYMENT_METHODS), p=_BASE_PM_P)),
            "card_bin": cb[0],
            "card_masked": cm[0],
            "device": self.device_ids(1)[0],
            "channel": int(rng.integers(0, len(CHANNELS))),
            "ip": _residential_ips(rng, np.array([home]))[0],
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


def _emails(rng: np.random.Generator, first: np.ndarray, last: np.ndarray, fraud: bool) -> np.ndarray:
    n = len(first)
    out = np.empty(n, dtype=object)
    styles = rng.integers(0, 6, n)
    nums = rng.integers(1, 100, n)
    years = rng.integers(60, 100, n) % 100
    if fraud:
        domains = np.array(_FRAUD_DOMAINS, dtype=object)[rng.integers(0, len(_FRAUD_DOMAINS), n)]
        letters = np.array(list("abcdefghijklmnopqrstuvwxyz0123456789"))
        for i in range(n):
            f, la = _FIRST[first[i]], _LAST[last[i]].replace(".", "")
            s = styles[i] % 3
            if s == 0:
                local = "".join(rng.choice(letters, int(rng.integers(7, 12))))
            elif s == 1:
                local = f"{f}{la}{rng.integers(1000, 99999)}"
            else:
                local = f"{f}.{la}{rng.integers(100, 9999)}"
            out[i] = f"{local}@{domains[i]}"
        return out
    domains = np.array(_DOMAINS, dtype=object)[rng.choice(len(_DOMAINS), size=n, p=_DOMAIN_P)]
    for i in range(n):
        f, la = _FIRST[first[i]], _LAST[last[i]]
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


def _fill(tpl: _Template, rng: np.random.Generator) -> tuple[str, float, float]:
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


def _price(p: float) -> float:
    if p >= 20:
        return float(np.ceil(p) - 0.01)
    return float(np.round(p, 2))


def _make_products(rng: np.random.Generator, cats: list[str], size: int, level: float):
    titles, pcat, price, hot = [], [], [], []
    seen = set()
    for _ in range(size * 2):
        if len(titles) >= size:
            break
        cat = cats[int(rng.integers(len(cats)))]
        tpls = _TEMPLATES[cat]
        tpl = tpls[int(rng.integers(len(tpls)))]
        title, mult, hm = _fill(tpl, rng)
        q = _QUALIFIERS.get(cat)
        if q and not tpl.exact and tpl.price * mult >= 80 and rng.random() < 0.2:
            qt, qm, qh = q[int(rng.integers(len(q)))]
            title, mult, hm = f"{title} {qt}", mult * qm, hm * qh
        if title in seen:
            continue
        seen.add(title)
        if tpl.exact:
            p = round(tpl.price * mult, 2)
        else:
            p = _price(tpl.price * mult * level * float(np.exp(rng.normal(0.0, 0.05))))
        titles.append(title)
        pcat.append(_CAT_IDX[cat])
        price.append(p)
        hot.append(tpl.hot * hm)
    return titles, pcat, price, hot


_QTY_P = np.stack([
    _QTY_P_MULTI if c in ("grocery", "books", "beauty", "toys")
    else _QTY_P_SINGLE if c in ("travel", "jewelry", "software") else _QTY_P_DEFAULT
    for c in PRODUCT_CATEGORIES
])  # fmt: skip
_QTY_CUM = np.cumsum(_QTY_P, axis=1)
_REFUND_BY_CAT = np.array([_REFUND_P[c] for c in PRODUCT_CATEGORIES])


class _Segment:
    """A stretch of traffic [start, start+span) under one scenario."""

    def __init__(self, world: _World, scenario: str, start_ns: int, span_ns: int, rows: int, fraud_rate: float,
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
            self.pm[r < 0.16] = _PM_IDX["bnpl"]
            self.pm[(r >= 0.16) & (r < 0.22)] = _PM_IDX["crypto"]
        self.pm_p = _BASE_PM_P.copy()
        if scenario == "new_payment_method":
            self.pm_p[_PM_IDX["bnpl"]] = 0.2
            self.pm_p[_PM_IDX["crypto"]] = 0.1
            self.pm_p /= self.pm_p.sum()

    # -- shared helpers ----------------------------------------------------------------------------
    def times(self, n: int, utc_offset_h: np.ndarray, hour_p: np.ndarray = _HOUR_P) -> np.ndarray:
        """Event times with weekly and daily (local time) seasonality inside the segment."""
        rng = self.rng
        offset = np.broadcast_to(np.asarray(utc_offset_h, dtype=float), (n,))
        day0 = (self.start // DAY_NS - 1) * DAY_NS
        ndays = int(np.ceil((self.end - day0) / DAY_NS)) + 1
        dow = (pd.Timestamp(day0, tz="UTC").dayofweek + np.arange(ndays)) % 7
        wp = _WEEK_W[dow] / _WEEK_W[dow].sum()
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
            style = rng.integers(0, len(_PROMO_WORDS) + 1, n)  # the extra style: "-NN%" suffix
            pre = np.array([s[0] for s in _PROMO_WORDS] + [""], dtype=object)[style]
            suf = np.array([s[1] for s in _PROMO_WORDS] + [""], dtype=object)[style]
            pct = np.char.add(np.char.add(" -", disc.astype(str)), "%").astype(object)
            suf = np.where(style == len(_PROMO_WORDS), pct, suf)
            new = pre + titles.astype(object) + suf
            titles = np.where(promo, new, titles)
            price = np.where(promo, price * (1 - disc / 100.0), price)
        return titles.astype(object), price

    def amounts(self, unit_usd: np.ndarray, qty: np.ndarray, cur: np.ndarray) -> np.ndarray:
        fx = np.array([FX_PER_USD[c] for c in CURRENCIES])[cur]
        extra = np.exp(np.abs(self.rng.normal(0.0, 0.04, len(qty))))  # tax/shipping
        return _round_money(unit_usd * qty * fx * extra, cur)

    # -- traffic -----------------------------------------------------------------------------------
    def run(self) -> dict[str, np.ndarray]:
        fraud = self.fraud()
        n_legit = max(self.rows - len(fraud["ts"]), 0)
        legit = self.legit(n_legit)
        return {k: np.concatenate([legit[k], fraud[k]]) for k in legit}

    def legit(self, n: int) -> dict[str, np.ndarray]:
        rng, w, us = self.rng, self.w, self.w.users
        n_burst_rows = int(n * 0.025) if n >= 200 else 0
        n_base = n - n_burst_rows
        act = us["activity"] * (us["signup"] < self.end)
        u = rng.choice(len(act), size=n_base, p=act / act.sum())
        ts = self.times(n_base, _COUNTRY_UTC[us["home"][u]])
        signup = us["signup"][u]
        early = ts < signup
        if early.any():  # new users: their orders come after sign-up, many soon after it
            k = int(early.sum())
            delay = (rng.exponential(1.5, k) * DAY_NS).astype(np.int64) + (rng.random(k) * HOUR_NS).astype(np.int64)
            ts[early] = np.minimum(signup[early] + delay, self.end - MS_NS) // MS_NS * MS_NS
        # merchant: one of the user's favourites or a popular one
        pop = w.m_pop.copy()
        if self.ring_merchant >= 0:
            pop[self.ring_merchant] *= 0.5
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
            ts_b = np.minimum(ts[rep] + _grouped_cumsum(gaps, sizes), self.end - MS_NS) // MS_NS * MS_NS
            p_b = cheap[rng.integers(0, len(cheap), len(rep))] if len(cheap) else p[rep]
            u, ts, p = (np.concatenate([u, u[rep]]), np.concatenate([ts, ts_b]), np.concatenate([p, p_b]))
            burst = np.concatenate([np.zeros(n_base, bool), np.ones(len(rep), bool)])
        else:
            burst = np.zeros(n_base, bool)
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
            dest = rng.choice(len(COUNTRIES), size=int(travel.sum()), p=_COUNTRY_P)
            ip[travel] = _residential_ips(rng, dest)
            shipping[travel] = np.where(rng.random(len(dest)) < 0.5, dest, home[travel])
        if vpn.any():
            ip[vpn] = _hosting_ips(rng, int(vpn.sum()))
        if kiosk.any():
            j = rng.integers(0, len(w.kiosk_dev), int(kiosk.sum()))
            device[kiosk], ip[kiosk], channel[kiosk] = w.kiosk_dev[j], w.kiosk_ip[j], 0
        gift = rng.random(n) < 0.03  # gifts to friends/family abroad
        shipping[gift] = rng.choice(len(COUNTRIES), size=int(gift.sum()), p=_COUNTRY_P)
        # gifts and travel purchases are often the resellable kind too (a phone, a console, a gift card)
        treat = (gift | travel) & ~burst & (rng.random(n) < 0.3)
        pool = np.flatnonzero((w.p_hot >= 2) & ~w.p_ring)
        if treat.any() and len(pool):
            wp = w.p_hot[pool] * w.m_pop[w.p_merchant[pool]]
            p[treat] = rng.choice(pool, size=int(treat.sum()), p=wp / wp.sum())
        m = w.p_merchant[p]
        cat = w.p_cat[p]
        qty = _QTY_VALUES[(rng.random(n)[:, None] > _QTY_CUM[cat]).sum(axis=1).clip(0, len(_QTY_VALUES) - 1)]
        qty[burst] = 1
        title, unit = self.title_price(p)

        # payment
        pm = self.pm[u].copy()
        other = rng.random(n) < 0.08
        pm[other] = rng.choice(len(PAYMENT_METHODS), size=int(other.sum()), p=self.pm_p)
        has_card = _IS_CARD_PM[pm]
        card_bin = np.where(has_card, us["card_bin"][u], "").astype(object)
        card_masked = np.where(has_card, us["card_masked"][u], "").astype(object)

        cur = us["currency"][u]
        amount = self.amounts(unit, qty, cur)
        refund = rng.random(n) < _REFUND_BY_CAT[cat]
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

    def fraud(self) -> dict[str, np.ndarray]:
        out = _FraudRows(self)
        total = int(round(self.rows * self.fraud_rate))
        targets = _allocate(total, _FRAUD_MIX)
        if self.scenario == "fraud_ring":
            targets["fraud_ring"] = int(round(self.rows * RING_FRAUD_RATE))
        elif self.scenario == "promotion_season":  # promotions bring mostly legitimate newcomers
            targets = _allocate(int(round(total * 0.85)), _FRAUD_MIX)
        if self.scenario == "fraud_ring" and targets["fraud_ring"]:
            self._setup_ring()
        for ftype, target in targets.items():
            lo, hi = _EPISODE_SIZE[ftype]
            fn = getattr(self, f"_ep_{ftype}")
            remaining = target
            while remaining > 0:
                k = min(int(self.rng.integers(lo, hi + 1)), remaining)
                if remaining - k < lo:
                    k = remaining
                fn(out, k)
                remaining -= k
        return out.columns()

    # -- fraud helpers -----------------------------------------------------------------------------
    def t0(self, duration_ns: int) -> int:
        """Start of a fraud episode: fraudsters keep their own (local) hours half of the time."""
        latest = max(self.end - duration_ns - MS_NS, self.start)
        if self.rng.random() < 0.5:
            t = int(self.times(1, np.array([_COUNTRY_UTC[self.fraud_country()]]))[0])
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
            ok &= np.isin(w.p_cat, [_CAT_IDX[c] for c in cats])
        if not ok.any():
            ok = w.p_ring == ring
            if cats is not None and np.isin(w.p_cat[ok], [_CAT_IDX[c] for c in cats]).any():
                ok &= np.isin(w.p_cat, [_CAT_IDX[c] for c in cats])
        idx = np.flatnonzero(ok)
        hot = rng.random(n) < hot_share
        wh = w.p_hot[idx] ** hot_power
        out = np.where(hot, rng.choice(idx, size=n, p=wh / wh.sum()), rng.choice(idx, size=n))
        return out

    def fraud_country(self) -> int:
        return int(self.rng.choice(_FRAUDSTER_C, p=_FRAUDSTER_P))

    def victim_country(self) -> int:
        return int(self.rng.choice(_VICTIM_C, p=_VICTIM_P))

    def fraud_ip(self, country: int) -> str:
        if self.rng.random() < 0.5:
            return _hosting_ips(self.rng, 1)[0]
        return _residential_ips(self.rng, np.array([country]))[0]

    def fraud_pm(self, usual: int | None = None) -> int:
        """A payment method for a fraudulent order (crypto/BNPL when the scenario has them)."""
        rng = self.rng
        if self.scenario == "new_payment_method" and rng.random() < 0.6:
            return _PM_IDX["crypto"] if rng.random() < 0.8 else _PM_IDX["bnpl"]
        if usual is not None and rng.random() < 0.6:
            return usual
        return _PM_IDX["credit_card"] if rng.random() < 0.75 else _PM_IDX["debit_card"]

    # -- fraud episodes (one per typology) ---------------------------------------------------------
    def _ep_card_testing(self, out: _FraudRows, n: int) -> None:
        rng, w = self.rng, self.w
        t0 = self.t0(n * 3 * MIN_NS)
        fc = self.fraud_country()
        if rng.random() < 0.55:
            acct = w.new_account(rng, t0 - int(rng.uniform(0, 20) * DAY_NS), home=fc)
        else:
            acct = w.account(int(w.pick_users(rng, 1, t0)[0]))
        device, ip = w.device_ids(1)[0], self.fraud_ip(fc)
        vc = self.victim_country()
        cb, cm = w.cards(rng, np.full(n, vc))
        if rng.random() < 0.7:  # one card, many tiny authorisations
            cm[:] = cm[0]
        else:  # a batch of stolen numbers from one issuer
            cm = np.array([cm[0][:-4] + c[-4:] for c in cm], dtype=object)
        cb[:] = cb[0]
        ts = t0 + np.cumsum((rng.exponential(35.0, n) * SEC_NS).astype(np.int64))
        p = self.pick_products(n, ("gift_cards", "software", "books"), max_usd=6.0, hot_share=0.8)
        pm = _PM_IDX["credit_card"] if rng.random() < 0.7 else _PM_IDX["debit_card"]
        status = np.where(rng.random(n) < 0.55, "cancelled", "completed")
        channel = 0 if rng.random() < 0.7 else int(rng.integers(0, len(CHANNELS)))
        out.add(ts, acct, p, "card_testing", device=device, ip=ip, channel=channel, pm=pm, card_bin=cb,
                card_masked=cm, billing=vc, shipping=acct["home"], status=status, qty=np.ones(n, np.int64))

    def _ep_abnormal_order(self, out: _FraudRows, n: int) -> None:
        rng, w = self.rng, self.w
        t0 = self.t0(2 * HOUR_NS)
        acct = w.account(int(w.pick_users(rng, 1, t0, min_age_days=30)[0]))
        norm = float(np.exp(acct["budget"]))
        p = self.pick_products(n, ("electronics", "jewelry", "gift_cards", "fashion", "travel", "sports"),
                               min_usd=max(8 * norm, 150.0))
        qty = rng.choice([1, 1, 2, 3, 5], size=n)
        ts = t0 + np.cumsum((rng.exponential(6.0, n) * MIN_NS).astype(np.int64))
        device = acct["device"] if rng.random() < 0.5 else w.device_ids(1)[0]
        ip = acct["ip"] if rng.random() < 0.5 else self.fraud_ip(acct["home"])
        shipping = acct["home"] if rng.random() < 0.6 else self.fraud_country()
        out.add(ts, acct, p, "abnormal_order", device=device, ip=ip, channel=acct["channel"],
                pm=self.fraud_pm(acct["pm"]), billing=acct["billing"], shipping=shipping, qty=qty)

    def _ep_payment_mismatch(self, out: _FraudRows, n: int) -> None:
        rng, w = self.rng, self.w
        t0 = self.t0(6 * HOUR_NS)
        vc = self.victim_country()
        sc = self.fraud_country()
        while sc == vc:
            sc = int(rng.integers(0, len(COUNTRIES)))
        if rng.random() < 0.5:
            acct = w.new_account(rng, t0 - int(rng.uniform(0, 90) * DAY_NS))
            device = acct["device"]
        else:
            acct = w.account(int(w.pick_users(rng, 1, t0)[0]))
            device = acct["device"] if rng.random() < 0.4 else w.device_ids(1)[0]
        usual = acct["pm"]
        choices = [m for m in ("credit_card", "gift_card", "bank_transfer", "debit_card") if _PM_IDX[m] != usual]
        pm = _PM_IDX[choices[0]] if rng.random() < 0.7 else _PM_IDX[choices[int(rng.integers(len(choices)))]]
        if self.scenario == "new_payment_method" and rng.random() < 0.4:
            pm = self.fraud_pm()
        cb, cm = w.cards(rng, np.array([vc]))
        ts = t0 + np.cumsum((rng.exponential(40.0, n) * MIN_NS).astype(np.int64))
        p = self.pick_products(n, ("electronics", "jewelry", "gift_cards", "software", "fashion", "travel"))
        ip = acct["ip"] if acct["idx"] >= 0 and rng.random() < 0.3 else self.fraud_ip(sc)
        out.add(ts, acct, p, "payment_mismatch", device=device, ip=ip, channel=acct["channel"], pm=pm,
                card_bin=cb[0], card_masked=cm[0], billing=vc, shipping=sc, qty=np.ones(n, np.int64))

    def _ep_refund_abuse(self, out: _FraudRows, n: int) -> None:
        rng, w = self.rng, self.w
        t0 = self.t0(14 * DAY_NS)
        if rng.random() < 0.7:
            acct = w.account(int(w.pick_users(rng, 1, t0, min_age_days=14)[0]))
        else:
            acct = w.new_account(rng, t0 - int(rng.uniform(5, 120) * DAY_NS), email_style="legit")
        ts = t0 + np.sort((rng.random(n) * rng.uniform(2, 14) * DAY_NS).astype(np.int64))
        norm = float(np.exp(acct["budget"]))
        p = self.pick_products(n, ("fashion", "electronics", "jewelry", "beauty", "home"), min_usd=max(1.5 * norm, 60),
                               hot_share=0.4)
        refund = rng.random(n) < 0.8
        refund[0] = True
        status = np.where(refund, "refunded", "completed")
        out.add(ts, acct, p, "refund_abuse", device=acct["device"], ip=acct["ip"], channel=acct["channel"],
                pm=self.fraud_pm(acct["pm"]), billing=acct["billing"], shipping=acct["home"], is_refund=refund,
                status=status, qty=rng.choice([1, 1, 1, 2, 3], size=n))

    def _ep_abnormal_goods(self, out: _FraudRows, n: int) -> None:
        rng, w = self.rng, self.w
        t0 = self.t0(8 * HOUR_NS)
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
                    channel=acct["channel"], pm=self.fraud_pm(acct["pm"]), billing=acct["billing"],
                    shipping=acct["home"], qty=np.ones(1, np.int64), price_factor=factor)

    def _ep_new_account_burst(self, out: _FraudRows, n: int) -> None:
        rng, w = self.rng, self.w
        t0 = self.t0(36 * HOUR_NS)
        acct = w.new_account(rng, t0 - int(rng.uniform(0, 0.5) * DAY_NS))
        span = rng.uniform(2, 36) * HOUR_NS
        ts = t0 + np.sort((rng.random(n) * span).astype(np.int64))
        p = self.pick_products(n, ("electronics", "gift_cards", "jewelry", "software", "fashion", "toys"))
        fc = self.fraud_country() if rng.random() < 0.5 else acct["home"]
        out.add(ts, acct, p, "new_account_burst", device=acct["device"], ip=self.fraud_ip(fc), channel=acct["channel"],
                pm=self.fraud_pm(acct["pm"]), billing=acct["billing"], shipping=fc, qty=rng.choice([1, 1, 1, 2], size=n))

    def _ep_account_farm(self, out: _FraudRows, n: int) -> None:
        rng, w = self.rng, self.w
        t0 = self.t0(3 * DAY_NS)
        fc = self.fraud_country()
        device = w.device_ids(1)[0]
        ip = self.fraud_ip(fc)
        rotate_ip = rng.random() < 0.4  # residential proxies: one IP per account
        channel = int(rng.integers(0, len(CHANNELS)))
        k = max(min(n, 4), int(round(n / 1.6)))
        owner = np.concatenate([np.arange(k), rng.integers(0, k, n - k)])
        ts = t0 + np.sort((rng.random(n) * rng.uniform(0.2, 3.0) * DAY_NS).astype(np.int64))
        accts = [w.new_account(rng, t0 - int(rng.uniform(0, 60) * DAY_NS), home=fc if rng.random() < 0.5 else None)
                 for _ in range(k)]
        ips = [self.fraud_ip(fc) if rotate_ip else ip for _ in range(k)]
        p = self.pick_products(n, ("gift_cards", "software", "electronics", "toys", "beauty"), max_usd=250)
        for i in range(n):
            a = accts[owner[i]]
            out.add(ts[i : i + 1], a, p[i : i + 1], "account_farm", device=device, ip=ips[owner[i]], channel=channel,
                    pm=self.fraud_pm(a["pm"]), billing=a["billing"], shipping=a["home"], qty=np.ones(1, np.int64))

    def _ep_account_takeover(self, out: _FraudRows, n: int) -> None:
        rng, w = self.rng, self.w
        t0 = self.t0(4 * HOUR_NS)
        acct = w.account(int(w.pick_users(rng, 1, t0, min_age_days=180)[0]))
        fc = self.fraud_country()
        while fc == acct["home"]:
            fc = int(rng.integers(0, len(COUNTRIES)))
        ts = t0 + np.cumsum((rng.exponential(20.0, n) * MIN_NS).astype(np.int64))
        p = self.pick_products(n, ("electronics", "gift_cards", "jewelry", "software"), min_usd=100.0, hot_share=0.8)
        pm = acct["pm"] if _IS_CARD_PM[acct["pm"]] or rng.random() < 0.5 else _PM_IDX["credit_card"]
        # careful takeovers go through a residential proxy in the victim's country, on the usual kind of device
        careful = rng.random() < 0.4
        ip = _residential_ips(rng, np.array([acct["home"]]))[0] if careful else self.fraud_ip(fc)
        channel = acct["channel"] if careful else (0 if rng.random() < 0.6 else int(rng.integers(0, len(CHANNELS))))
        out.add(ts, acct, p, "account_takeover", device=w.device_ids(1)[0], ip=ip, channel=channel, pm=pm,
                billing=acct["billing"], shipping=fc, qty=rng.choice([1, 1, 2], size=n))

    def _setup_ring(self) -> None:
        rng, w = self.rng, self.w
        self.ring_country = self.fraud_country()
        self.ring_devices = w.device_ids(int(rng.integers(3, 6)))
        self.ring_ips = _hosting_ips(rng, int(rng.integers(2, 4)))
        self.ring_drops = [self.fraud_country() for _ in range(2)]
        n_acc = max(8, int(round(self.rows * RING_FRAUD_RATE / 2.5)))
        self.ring_accounts = [w.new_account(rng, self.start - int(rng.uniform(0, 15) * DAY_NS) +
                                            int(rng.uniform(0, 0.5) * self.span)) for _ in range(n_acc)]

    def _ep_fraud_ring(self, out: _FraudRows, n: int) -> None:
        rng = self.rng
        t0 = self.t0(3 * HOUR_NS)
        ts = t0 + np.sort((rng.random(n) * rng.uniform(1, 3) * HOUR_NS).astype(np.int64))
        ready = [a for a in self.ring_accounts if a["signup"] <= t0] or self.ring_accounts[:1]
        p = self.pick_products(n, ring=True, hot_share=0.5)
        for i in range(n):
            a = ready[int(rng.integers(len(ready)))]
            a["signup"] = min(a["signup"], int(ts[i]))
            vc = self.victim_country()
            cb, cm = self.w.cards(rng, np.array([vc]))
            out.add(ts[i : i + 1], a, p[i : i + 1], "fraud_ring",
                    device=self.ring_devices[int(rng.integers(len(self.ring_devices)))],
                    ip=self.ring_ips[int(rng.integers(len(self.ring_ips)))], channel=int(rng.integers(0, 3)),
                    pm=self.fraud_pm(), card_bin=cb[0], card_masked=cm[0], billing=vc,
                    shipping=self.ring_drops[int(rng.integers(2))], qty=np.ones(1, np.int64))


def _grouped_cumsum(values: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    c = np.cumsum(values)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    before = np.where(starts > 0, c[np.maximum(starts - 1, 0)], 0)
    return c - np.repeat(before, sizes)


def _allocate(total: int, shares: dict[str, float]) -> dict[str, int]:
    """Split `total` by `shares` with the largest-remainder rule (sums exactly to total)."""
    keys = list(shares)
    raw = np.array([shares[k] for k in keys]) * total / sum(shares.values())
    base = np.floor(raw).astype(int)
    rest = total - base.sum()
    order = np.argsort(-(raw - base), kind="stable")
    base[order[:rest]] += 1
    return {k: int(v) for k, v in zip(keys, base, strict=True)}


class _FraudRows:
    """Collects fraud rows episode by episode (few enough for plain lists)."""

    def __init__(self, seg: _Segment):
        self.seg = seg
        self.cols: dict[str, list] = {k: [] for k in (
            "ts", "user_id", "merchant_id", "merchant_category", "device_id", "ip_address", "email", "amount",
            "currency", "payment_method", "card_bin", "card_number_masked", "billing_country", "shipping_country",
            "product_title", "product_category", "quantity", "channel", "account_age_days", "is_refund",
            "order_status", "is_fraud", "fraud_type")}  # fmt: skip

    def add(self, ts, acct: dict, p, ftype: str, *, device, ip, channel, pm, billing, shipping, qty,
            card_bin=None, card_masked=None, is_refund=None, status=None, price_factor: float = 1.0) -> None:
        seg, w = self.seg, self.seg.w
        ts = np.minimum(np.asarray(ts, dtype=np.int64), seg.end - MS_NS) // MS_NS * MS_NS
        ts = np.maximum(ts, max(acct["signup"], seg.start))
        n = len(ts)
        p = np.asarray(p, dtype=np.int64)
        title, unit = seg.title_price(p)
        cur = np.full(n, acct["currency"])
        amount = seg.amounts(unit * price_factor, np.asarray(qty), cur)
        has_card = bool(_IS_CARD_PM[pm])
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


def _to_frame(cols: dict[str, np.ndarray], key: int, id_offset: int) -> pd.DataFrame:
    order = np.argsort(cols["ts"], kind="stable")
    n = len(order)
    data = {k: v[order] for k, v in cols.items()}
    tx = np.char.add("tx_", _hex(_mix(np.arange(id_offset, id_offset + n), key ^ 0x7E7E, 64), 16)).astype(object)
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
