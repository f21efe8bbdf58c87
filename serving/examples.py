"""An example transaction (docs, warm-up, smoke tests)."""

from __future__ import annotations

from typing import Any


def example_transaction(**overrides: Any) -> dict[str, Any]:
    tx: dict[str, Any] = {
        "transaction_id": "tx-0001",
        "event_timestamp": "2026-01-15T12:30:00Z",
        "user_id": "user-42",
        "merchant_id": "merchant-7",
        "merchant_category": "electronics store",
        "device_id": "device-abc",
        "ip_address": "203.0.113.9",
        "email": "jane@example.com",
        "amount": 129.99,
        "currency": "USD",
        "payment_method": "credit_card",
        "card_bin": "411111",
        "card_number_masked": "411111******1234",
        "billing_country": "US",
        "shipping_country": "US",
        "product_title": "Wireless noise-cancelling headphones",
        "product_category": "electronics",
        "quantity": 1,
        "channel": "web",
        "account_age_days": 420,
        "is_refund": False,
    }
    tx.update(overrides)
    return tx
