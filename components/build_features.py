"""Pipeline step 2 as a KFP component: Feast features.

The logic lives in `riskops.features.build`; this module only declares the component.
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
    """KFP adapter: the Feast repo working copy lives at feature_repo_dir (shared with serving)."""
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
