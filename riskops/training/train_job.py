"""The training job: ``python -m riskops.training.train_job`` fine-tunes the risk model on a training set.

What the prod-gpu overlay's PyTorchJob (k8s/overlays/prod-gpu/pytorchjob-train.yaml) runs, one
process per rank under ``torchrun`` with ``--distributed`` (see riskops.training.distributed); the
training set and the model may live on object storage (s3://, gs://, file://, read with pyarrow).
"""

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import pandas as pd

from riskops.training.distributed import DistInfo, init_distributed, shutdown_distributed
from riskops.training.finetune import TrainConfig, train_from_training_set
from riskops.training.params import ALL_ROWS_TRAINING


def resolve_uri(uri: str):
    """(pyarrow filesystem, path) for a local path or a URI (s3://, gs://, file://, ...).

    Credentials come from the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY for S3).
    pyarrow's S3 client does not read AWS_ENDPOINT_URL(_S3) (apache/arrow#49643), so for an
    S3-compatible store such as MinIO the endpoint is passed on explicitly.
    """
    from pyarrow import fs as pafs

    if "://" not in uri:
        return pafs.LocalFileSystem(), str(Path(uri).resolve())
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if uri.startswith("s3://") and endpoint:
        scheme, _, host = endpoint.rstrip("/").partition("://")
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        s3 = pafs.S3FileSystem(endpoint_override=host, scheme=scheme, region=region)
        return s3, uri[len("s3://") :]
    return pafs.FileSystem.from_uri(uri)


def read_training_set(uri: str) -> pd.DataFrame:
    filesystem, path = resolve_uri(uri)
    return pd.read_parquet(path, filesystem=filesystem)


def upload_model_dir(model_dir: Path, uri: str) -> str:
    """Copy the model folder's files under `uri` (see resolve_uri); returns `uri`."""
    from pyarrow import fs as pafs

    filesystem, path = resolve_uri(uri)
    filesystem.create_dir(path, recursive=True)
    pafs.copy_files(str(Path(model_dir).resolve()), path, destination_filesystem=filesystem)
    return uri


def build_parser() -> argparse.ArgumentParser:
    d = ALL_ROWS_TRAINING
    p = argparse.ArgumentParser(
        prog="python -m riskops.training.train_job",
        description="Fine-tune the risk model on a training set (the pipeline's features step output). "
        "With --distributed, run one DDP rank per process under torchrun or a Kubeflow PyTorchJob "
        "(NCCL on GPU, gloo on CPU); only rank 0 writes the model.",
    )
    p.add_argument(
        "--training_set",
        required=True,
        help="parquet of transactions + entity features: a path or a URI pyarrow opens (s3://, gs://, file://)",
    )
    p.add_argument("--model_dir", required=True, help="local folder rank 0 writes the model to")
    p.add_argument(
        "--output_uri",
        default="",
        help="also copy the model folder there after training (rank 0), e.g. s3://bucket/prefix/",
    )
    p.add_argument(
        "--distributed",
        action="store_true",
        help="join the torch.distributed group from RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT",
    )
    p.add_argument(
        "--encoder",
        choices=("minilm", "tiny"),
        default=d.encoder,
        help="minilm (pretrained all-MiniLM-L6-v2) or tiny (random, tests)",
    )
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch_size", type=int, default=TrainConfig.batch_size, help="rows per step per process")
    p.add_argument(
        "--max_steps", type=int, default=d.max_steps, help="stop after N optimiser steps (0 = no limit)"
    )
    p.add_argument("--finetune_layers", type=int, default=d.finetune_layers)
    p.add_argument("--patience", type=int, default=TrainConfig.patience)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument(
        "--max_train_rows",
        type=int,
        default=d.max_train_rows,
        help="every fraud plus at most N sampled legit rows (0 = all rows)",
    )
    p.add_argument(
        "--test_fraction", type=float, default=d.test_fraction, help="newest share left for evaluation"
    )
    p.add_argument(
        "--val_fraction", type=float, default=d.val_fraction, help="share before it for early stopping"
    )
    p.add_argument(
        "--recent_from", default="", help="rows at or after this time all train (retraining window)"
    )
    p.add_argument("--device", default=TrainConfig.device, help="auto (CUDA if available), cpu or cuda")
    p.add_argument(
        "--num_threads", type=int, default=0, help="CPU threads per process (0 = cores / local ranks)"
    )
    p.add_argument("--progress", action="store_true", help="tqdm bars (rank 0)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    dinfo = DistInfo()
    if args.distributed:
        try:
            dinfo = init_distributed(args.device)
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    logging.basicConfig(
        level=logging.INFO if dinfo.is_main else logging.WARNING,
        format=f"%(asctime)s rank {dinfo.rank}/{dinfo.world_size} %(name)s %(message)s",
    )
    try:
        config = TrainConfig(
            epochs=args.epochs,
            batch_size=args.batch_size,
            encoder=args.encoder,
            max_steps=args.max_steps or None,
            finetune_layers=args.finetune_layers,
            patience=args.patience,
            seed=args.seed,
            max_train_rows=args.max_train_rows or None,
            device=args.device,
            num_threads=args.num_threads or None,
            progress=args.progress,
        )
        frame = read_training_set(args.training_set)
        result = train_from_training_set(
            frame, Path(args.model_dir), config, args.test_fraction, args.val_fraction, args.recent_from
        )
        if dinfo.is_main:
            uploaded = upload_model_dir(result.model_dir, args.output_uri) if args.output_uri else ""
            summary = {
                "model_dir": str(result.model_dir),
                "output_uri": uploaded,
                "world_size": result.world_size,
                "backend": result.backend,
                "device": result.device,
                "best_epoch": result.best_epoch,
                "val_pr_auc": result.val_pr_auc,
                "train_seconds": round(result.train_seconds, 2),
                "state_sha256": result.state_sha256,
            }
            print(json.dumps(summary), flush=True)
    finally:
        shutdown_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
