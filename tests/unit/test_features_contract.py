import numpy as np
import pandas as pd

from riskops.features.contract import (
    CATEGORICAL_FEATURES,
    NUMERIC_FEATURES,
    TEXT_COLUMN,
    build_model_frame,
)


def _txn(**kw):
    base = {
        "event_timestamp": "2026-03-07T23:30:00Z",
        "amount": 120.0,
        "quantity": 2,
        "account_age_days": 400,
        "is_refund": False,
        "billing_country": "US",
        "shipping_country": "US",
        "payment_method": "credit_card",
        "channel": "web",
        "product_category": "electronics",
        "currency": "USD",
        "product_title": "Apple iPhone 15 Pro 256GB",
        "merchant_category": "electronics",
    }
    base.update(kw)
    return base


def test_unknown_entities_get_defaults_not_nans():
    frame = build_model_frame(pd.DataFrame([_txn()]))
    assert list(frame.columns) == list(NUMERIC_FEATURES) + list(CATEGORICAL_FEATURES) + [TEXT_COLUMN]
    numeric = frame[list(NUMERIC_FEATURES)].to_numpy(dtype=float)
    assert np.isfinite(numeric).all()
    assert frame.loc[0, "user_is_new"] == 1.0 and frame.loc[0, "user_txn_count_1h"] == 0.0
    assert frame.loc[0, "is_weekend"] == 1.0  # 2026-03-07 is a Saturday
    text = frame.loc[0, TEXT_COLUMN]
    assert "iPhone" in text and "category" in text
    # structured fields reach the model through the categorical tower, not the text
    assert "billing" not in text and frame.loc[0, "billing_country"] == "US"


def test_request_features_use_entity_history():
    history = {
        "user_amount_mean_30d": 50.0,
        "user_amount_std_30d": 10.0,
        "user_last_event_epoch": pd.Timestamp("2026-03-07T23:29:00Z").timestamp(),
    }
    normal = build_model_frame(pd.DataFrame([_txn(amount=55.0, **history)]))
    spike = build_model_frame(pd.DataFrame([_txn(amount=900.0, shipping_country="NG", **history)]))
    assert spike.loc[0, "amount_zscore_user"] > 10 * max(normal.loc[0, "amount_zscore_user"], 0.1)
    assert spike.loc[0, "country_mismatch"] == 1.0 and normal.loc[0, "country_mismatch"] == 0.0
    assert normal.loc[0, "user_is_new"] == 0.0
    assert np.isclose(normal.loc[0, "user_seconds_since_last_log"], np.log1p(60.0))


def test_model_frame_from_records_equals_the_frame_path():
    """Serving builds model frames straight from request dicts; it must be the training arithmetic."""
    import datetime as dt

    from riskops.data.generator import GeneratorConfig, generate
    from riskops.features.contract import (
        ALL_ENTITY_FEATURES,
        NUMERIC_FEATURES,
        build_model_frame_records,
        model_frame_and_numeric,
    )
    from riskops.pii import hash_pii

    df = hash_pii(generate(GeneratorConfig(rows=600, seed=3))).reset_index(drop=True)
    rng = np.random.default_rng(0)
    rows = df.drop(columns=["is_fraud", "fraud_type"]).to_dict("records")
    for i, r in enumerate(rows):
        ts = r["event_timestamp"]
        # serving hands aware datetimes (microseconds); training frames hold pandas Timestamps
        r["event_timestamp"] = ts.to_pydatetime() if i % 2 else ts
        if i % 3:  # entity features: present, NaN (never seen) or absent
            for f in ALL_ENTITY_FEATURES:
                r[f] = float(rng.poisson(3)) if rng.random() < 0.8 else float("nan")
        if i % 7 == 0:
            r["event_timestamp"] = dt.datetime(2026, 3, 7, 23, 59, 59, 999999, tzinfo=dt.UTC)
    expected = build_model_frame(pd.DataFrame.from_records(rows))
    got = build_model_frame_records(rows)
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    # the numeric matrix served with it is the frame's numeric columns, value for value
    frame, numeric = model_frame_and_numeric(rows)
    assert len(frame) == len(expected) and frame.columns == tuple(expected.columns)
    pd.testing.assert_frame_equal(frame.to_pandas(), expected, check_exact=True)
    assert numeric.dtype == np.float64
    assert np.array_equal(numeric, expected[list(NUMERIC_FEATURES)].to_numpy(dtype=np.float64))
    # one request alone (the common serving case), and no entity features at all
    one = [{k: v for k, v in rows[3].items() if k not in ALL_ENTITY_FEATURES}]
    pd.testing.assert_frame_equal(
        build_model_frame_records(one), build_model_frame(pd.DataFrame.from_records(one))
    )
