"""Pipeline step 0 as a KFP component: bring transactions in (the built-in generator or the user's own file).

The logic lives in `riskops.data.ingest`; this module only declares the component.
"""

from kfp.dsl import Dataset, Output

from components.common import step_component


@step_component()
def ingest_transactions_op(
    transactions: Output[Dataset],
    source: str = "synthetic",
    rows: int = 20_000,
    seed: int = 7,
    fraud_rate: float = 0.015,
    input_path: str = "",
) -> None:
    from riskops.data.ingest import load_transactions

    df = load_transactions(source, rows=rows, seed=seed, fraud_rate=fraud_rate, input_path=input_path)
    df.to_parquet(transactions.path, index=False)
    transactions.metadata.update({"rows": len(df), "source": source})
