"""The transaction schema: the one place that says what a transaction is.

Everything else (generator, GX suite, Feast sources, model inputs, serving validation,
README table) reads these definitions instead of repeating column names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pandas as pd

Kind = Literal["string", "float", "int", "bool", "timestamp"]


@dataclass(frozen=True)
class Field:
    name: str
    kind: Kind
    description: str
    required: bool = True  # must be present (and non-null) on every scoring request
    pii: bool = False  # hashed with a keyed hash before features, models or logs see it
    label: bool = False  # ground truth; never required at scoring time


CURRENCIES: tuple[str, ...] = ("USD", "EUR", "GBP", "CAD", "AUD", "JPY", "BRL", "INR")
PAYMENT_METHODS: tuple[str, ...] = (
    "credit_card",
    "debit_card",
    "paypal",
    "apple_pay",
    "google_pay",
    "bank_transfer",
    "gift_card",
    "crypto",  # the "new payment method" drift scenario introduces it; allowed by the schema
    "bnpl",
)
CHANNELS: tuple[str, ...] = ("web", "ios", "android")
# Ceiling for one order's amount in its own currency (JPY/INR orders run to millions).
AMOUNT_MAX = 1e8
ORDER_STATUSES: tuple[str, ...] = ("completed", "refunded", "cancelled")
COUNTRIES: tuple[str, ...] = (
    "US", "GB", "DE", "FR", "ES", "IT", "NL", "CA", "AU", "JP", "BR", "IN", "MX", "PL", "SE",
    "NG", "RO", "VN", "ID", "PH",
)  # fmt: skip
PRODUCT_CATEGORIES: tuple[str, ...] = (
    "electronics",
    "gift_cards",
    "fashion",
    "home",
    "beauty",
    "sports",
    "toys",
    "books",
    "grocery",
    "jewelry",
    "software",
    "travel",
)
FRAUD_TYPES: tuple[str, ...] = (
    "none",
    "abnormal_order",  # amount far off the user's norm, bursts of orders
    "card_testing",  # abnormal payment: many tiny authorisations on one card
    "payment_mismatch",  # abnormal payment: billing/shipping/BIN country mismatch
    "refund_abuse",  # abnormal refunds: amount/frequency
    "abnormal_goods",  # price far off its category, sudden sales spikes
    "new_account_burst",  # abnormal accounts: brand-new accounts very active
    "account_farm",  # abnormal accounts: many accounts per device/IP
    "account_takeover",  # old account, new device/IP/country, high-value goods
    "fraud_ring",  # drift scenario: a new coordinated ring
)

TRANSACTION_FIELDS: tuple[Field, ...] = (
    Field("transaction_id", "string", "Unique id of the order/payment attempt."),
    Field("event_timestamp", "timestamp", "When the order was placed (UTC)."),
    Field("user_id", "string", "Customer account id."),
    Field("merchant_id", "string", "Seller/merchant id."),
    Field("merchant_category", "string", "The merchant's main category (free text)."),
    Field("device_id", "string", "Device fingerprint id."),
    Field("ip_address", "string", "Client IP address.", pii=True),
    Field("email", "string", "Customer e-mail address.", pii=True),
    Field("amount", "float", "Order amount (> 0), in the order currency."),
    Field("currency", "string", f"ISO currency, one of {', '.join(CURRENCIES)}."),
    Field("payment_method", "string", f"One of {', '.join(PAYMENT_METHODS)}."),
    Field("card_bin", "string", "First 6 digits of the card (issuer), '' if no card."),
    Field("card_number_masked", "string", "Masked card e.g. 411111******1234.", pii=True),
    Field("billing_country", "string", "ISO-3166 alpha-2 billing country."),
    Field("shipping_country", "string", "ISO-3166 alpha-2 shipping country."),
    Field("product_title", "string", "Product title as shown in the shop (text)."),
    Field("product_category", "string", f"One of {', '.join(PRODUCT_CATEGORIES)}."),
    Field("quantity", "int", "Items ordered (>= 1)."),
    Field("channel", "string", f"One of {', '.join(CHANNELS)}."),
    Field("account_age_days", "int", "Age of the customer account in days (>= 0)."),
    Field("is_refund", "bool", "True when the order is a refund request."),
    Field("order_status", "string", f"One of {', '.join(ORDER_STATUSES)}.", required=False),
    Field("is_fraud", "int", "Label: 1 fraud, 0 legitimate.", required=False, label=True),
    Field("fraud_type", "string", "Synthetic label detail (FRAUD_TYPES).", required=False, label=True),
)

FIELDS_BY_NAME: dict[str, Field] = {f.name: f for f in TRANSACTION_FIELDS}
COLUMNS: tuple[str, ...] = tuple(f.name for f in TRANSACTION_FIELDS)
REQUIRED_COLUMNS: tuple[str, ...] = tuple(f.name for f in TRANSACTION_FIELDS if f.required)
PII_COLUMNS: tuple[str, ...] = tuple(f.name for f in TRANSACTION_FIELDS if f.pii)
LABEL_COLUMN = "is_fraud"
TIMESTAMP_COLUMN = "event_timestamp"

# Hashed stand-ins for PII columns (see riskops.pii). These are what features and models see.
HASHED_COLUMN = {"ip_address": "ip_hash", "email": "email_hash", "card_number_masked": "card_hash"}

_PANDAS_DTYPES: dict[Kind, str] = {
    "string": "string",
    "float": "float64",
    "int": "int64",
    "bool": "bool",
    "timestamp": "datetime64[ns, UTC]",
}


def pandas_dtype(field: Field) -> str:
    return _PANDAS_DTYPES[field.kind]


def coerce(df: pd.DataFrame) -> pd.DataFrame:
    """Cast known columns to their schema dtypes (unknown columns are kept as they are).

    Raises ValueError naming the column when a value cannot be converted.
    """
    out = df.copy()
    for name in out.columns:
        field = FIELDS_BY_NAME.get(name)
        if field is None:
            continue
        try:
            if field.kind == "timestamp":
                out[name] = pd.to_datetime(out[name], utc=True)
            elif field.kind == "string":
                out[name] = out[name].astype("string")
            else:
                out[name] = out[name].astype(pandas_dtype(field))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"column {name!r} cannot be read as {field.kind}: {exc}") from exc
    return out


def markdown_table() -> str:
    """The schema as a Markdown table (the README's copy is generated from this)."""
    rows = ["| column | type | required | PII | description |", "|---|---|---|---|---|"]
    for f in TRANSACTION_FIELDS:
        req = "label" if f.label else ("yes" if f.required else "no")
        rows.append(f"| `{f.name}` | {f.kind} | {req} | {'hashed' if f.pii else ''} | {f.description} |")
    return "\n".join(rows)
