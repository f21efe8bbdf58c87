"""KFP adapters of the feature step: windowed entity aggregates through Feast, joined point in time.

``build_features_op`` runs riskops.features.build (the built-in schema); ``dataset_features_op`` runs
riskops.byod.features (the dataset's mapped entities only). The Feast repo working copy lives at
``feature_repo_dir``, shared with serving.
"""

from kfp.dsl import Dataset, Input, Metrics, Output

from components.common import step_component


@step_component()
def build_features_op(
    transactions: Input[Dataset],
    training_set: Output[Dataset],
    metrics: Output[Metrics],
    feature_repo_dir: str = "",
) -> None:
    """Transactions -> Feast repo + point-in-time training set (empty feature_repo_dir: $RISKOPS_HOME's)."""
    from pathlib import Path

    import pandas as pd

    from riskops.features.build import build_features
    from riskops.settings import paths

    repo_dir = Path(feature_repo_dir) if feature_repo_dir else paths().feature_repo
    result = build_features(pd.read_parquet(transactions.path), repo_dir)
    result.training_frame.to_parquet(training_set.path, index=False)
    training_set.metadata.update({"rows": len(result.training_frame), "feature_repo": str(result.repo)})
    for name, value in result.metrics().items():
        metrics.log_metric(name, value)


@step_component()
def dataset_features_op(
    dataset: Input[Dataset], training_set: Output[Dataset], dataset_config: str, feature_repo_dir: str = ""
) -> None:
    """Windowed aggregates for the mapped entities through Feast; no entities: the rows as they are."""
    from pathlib import Path

    import pandas as pd

    from riskops.byod.config import parse_config
    from riskops.byod.features import build_dataset_features

    config = parse_config(dataset_config)
    out, info = build_dataset_features(
        pd.read_parquet(dataset.path), config, Path(feature_repo_dir) if feature_repo_dir else None
    )
    out.to_parquet(training_set.path, index=False)
    training_set.metadata.update({"rows": len(out), **{k: v for k, v in info.items() if k != "aggregates"},
                                  "aggregates": len(info["aggregates"])})  # fmt: skip
    print(f"aggregates ({len(info['aggregates'])}): {info['aggregates'] or info.get('note')}")
