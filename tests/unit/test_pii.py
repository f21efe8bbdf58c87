import pandas as pd

from riskops.pii import hash_pii, hash_record, hash_value


def test_hash_is_keyed_stable_and_normalised():
    a = hash_value("Jane@Example.com", b"k1")
    assert a == hash_value("jane@example.com ", b"k1")
    assert a != hash_value("jane@example.com", b"k2")
    assert "jane" not in a and len(a) == 20
    assert hash_value("", b"k1") == "" and hash_value(None, b"k1") == ""


def test_frame_and_record_hashing_agree_and_drop_raw_columns():
    df = pd.DataFrame(
        {
            "email": ["a@x.io", "b@x.io"],
            "ip_address": ["10.0.0.1", "10.0.0.2"],
            "card_number_masked": ["411111******1234", ""],
            "amount": [1.0, 2.0],
        }
    )
    out = hash_pii(df, b"k")
    assert set(out.columns) == {"amount", "email_hash", "ip_hash", "card_hash"}
    rec = hash_record(df.iloc[0].to_dict(), b"k")
    assert rec["ip_hash"] == out.loc[0, "ip_hash"] and "ip_address" not in rec
    assert out.loc[1, "card_hash"] == ""


def test_keyed_hasher_is_hmac_sha256():
    """The precomputed-state HMAC equals the standard library's, short, block-sized and long keys."""
    import hashlib
    import hmac

    from riskops.pii import KeyedHasher

    for key in (b"", b"k", b"riskops-dev-key-not-secret", b"x" * 64, b"y" * 65, bytes(range(200))):
        hasher = KeyedHasher(key)
        for msg in (b"", b"a", b"jane@example.com", "ünï".encode(), b"z" * 1000):
            assert hasher.hexdigest(msg) == hmac.new(key, msg, hashlib.sha256).hexdigest(), (key, msg)
    assert (
        hash_value(" Jane@Example.com", b"k1")
        == hmac.new(b"k1", b"jane@example.com", "sha256").hexdigest()[:20]
    )
