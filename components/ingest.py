"""KFP adapters of the ingest step: transactions in, as Parquet.

``ingest_transactions_op`` runs riskops.data.ingest (the built-in generator or a schema file);
``ingest_dataset_op`` runs riskops.byod.ingest (a user's dataset through its column mapping).
The seed has no default here: the pipeline passes it (riskops.training.params holds the defaults,
and KFP runs this function from its own source, where a default could not name them).
"""

from kfp.dsl import Dataset, Output

from components.common import step_component


@step_component()
def ingest_transactions_op(
    transactions: Output[Dataset],
    seed: int,
    source: str = "synthetic",
    rows: int = 20_000,
    fraud_rate: float = 0.015,
    input_path: str = "",
) -> None:
    """'synthetic': generate `rows` transactions; 'file': read `input_path` (Parquet/JSONL) as it is."""
    from riskops.data.ingest import load_transactions

    df = load_transactions(source, rows=rows, seed=seed, fraud_rate=fraud_rate, input_path=input_path)
    df.to_parquet(transactions.path, index=False)
    transactions.metadata.update({"rows": len(df), "source": source})


@step_component()
def ingest_dataset_op(dataset: Output[Dataset], dataset_config: str, max_rows: int = 0) -> None:
    """Load the configured source, check the mapping, hash PII, keep mapped columns (newest max_rows)."""
    from riskops.byod.config import parse_config
    from riskops.byod.ingest import load_canonical
    from riskops.data.datasets import summary

    config = parse_config(dataset_config)
    df = load_canonical(config, max_rows=max_rows)
    df.to_parquet(dataset.path, index=False)
    info = summary(df, config)
    dataset.metadata.update({"dataset": config.name, **info})
    print(f"dataset {config.name}: {info}")
