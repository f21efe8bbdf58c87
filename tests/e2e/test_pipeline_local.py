"""The real training pipeline through kfp.local: GX, Feast (SQLite), training, evaluation, registry."""

import json

import pytest

from pipelines.runner import PipelineFailed, run_local
from riskops.data.generator import GeneratorConfig, generate, write_transactions
from riskops.registry.store import ModelRegistry
from riskops.settings import paths

pytestmark = pytest.mark.slow


def test_pipeline_registers_a_champion_and_a_failed_gate_changes_nothing(riskops_home, tmp_path):
    home = paths()
    run = run_local(home, source="synthetic", rows=2500, seed=11, encoder="tiny", epochs=1, max_steps=30)

    registry = ModelRegistry(home.registry)
    assert run.registration["version"] == "v0001" and run.registration["alias"] == "champion"
    champion = registry.champion()
    assert champion is not None and champion.version == "v0001"
    for name in ("model.safetensors", "config.json", "policy.json", "evaluation.json", "MODEL_CARD.md"):
        assert (champion.path / name).exists(), name
    evaluation = json.loads((champion.path / "evaluation.json").read_text())
    assert {"transformer", "rules", "logistic_regression", "lightgbm", "isolation_forest"} <= set(
        evaluation["models"]
    )
    assert 0.0 <= evaluation["models"]["transformer"]["roc_auc"] <= 1.0
    thresholds = json.loads((champion.path / "policy.json").read_text())
    assert thresholds["block"] >= thresholds["review"]
    assert (run.reports_dir / "validation_report.html").exists()
    assert (home.feature_repo / "data" / "online_store.db").exists()

    # Corrupt data: the GX gate fails, nothing after it runs, the champion stays.
    bad = generate(GeneratorConfig(rows=400, seed=12))
    bad.loc[bad.index[:3], "amount"] = -5.0
    bad.loc[bad.index[5], "currency"] = "XYZ"
    bad_file = write_transactions(bad, tmp_path / "bad.parquet")
    with pytest.raises(PipelineFailed) as failure:
        run_local(home, source="file", input_path=str(bad_file), encoder="tiny", epochs=1, max_steps=5)
    report = json.loads((failure.value.reports_dir / "validation_report.json").read_text())
    failed = {(f["expectation"], f["column"]) for f in report["failures"]}
    assert ("expect_column_values_to_be_between", "amount") in failed
    assert ("expect_column_values_to_be_in_set", "currency") in failed
    assert (failure.value.reports_dir / "validation_report.html").exists()
    assert not (failure.value.reports_dir / "registration.json").exists()
    assert [v.version for v in registry.list_versions()] == ["v0001"]
    assert registry.champion().version == "v0001"
