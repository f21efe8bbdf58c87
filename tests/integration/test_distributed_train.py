"""Distributed (DDP) fine-tuning: two CPU processes with gloo, launched the way the PyTorchJob does.

`torchrun --standalone --nproc-per-node 2 -m riskops.training.train_job --distributed ...` runs the real
entry point on a small hand-made training set with the tiny random encoder. The ranks exchange a
SHA-256 of their final state_dict (training.json keeps every rank's); the test recomputes the
digest from the model file rank 0 wrote and checks that both ranks match it, that the model was
trained (loss fell, the top layer moved, the frozen layers did not) and that it scores. The run
stops early, so the early-stopping decision rank 0 broadcasts is exercised too.
NCCL (the GPU path) is not exercised here: these machines have no GPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file
from sklearn.metrics import roc_auc_score
from support.data import planted_signal_transactions

from riskops.data.splits import time_split
from riskops.features.contract import build_model_frame
from riskops.training.distributed import shard_batch, state_digest
from riskops.training.finetune import set_seed
from riskops.training.model import ModelConfig, RiskModel
from riskops.training.scorer import RiskScorer
from riskops.training.train_job import build_parser, main, resolve_uri

pytestmark = pytest.mark.slow  # torchrun with two ranks: ~10 s a test

REPO = Path(__file__).resolve().parents[2]
TORCHRUN = Path(sys.executable).parent / "torchrun"
SEED = 5
FINETUNE_LAYERS = 1
EPOCHS = 8  # with patience 1 the run stops early (epoch 4 here): the broadcast decision is exercised


def make_training_set(n: int, seed: int, fraud_rate: float = 0.12) -> pd.DataFrame:
    return planted_signal_transactions(n, seed, fraud_rate)


def _env() -> dict:
    env = dict(os.environ)
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), PYTHONWARNINGS="ignore")
    return env


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    df = make_training_set(1500, seed=SEED)
    df.to_parquet(tmp / "training_set.parquet")
    cmd = [
        str(TORCHRUN), "--standalone", "--nproc-per-node", "2",
        "-m", "riskops.training.train_job", "--distributed",
        "--training_set", (tmp / "training_set.parquet").as_uri(),
        "--model_dir", str(tmp / "model"),
        "--output_uri", (tmp / "uploaded").as_uri(),
        "--encoder", "tiny", "--finetune_layers", str(FINETUNE_LAYERS),
        "--epochs", str(EPOCHS), "--patience", "1", "--batch_size", "32", "--seed", str(SEED),
        "--test_fraction", "0.2", "--val_fraction", "0.15", "--device", "cpu",
    ]  # fmt: skip
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=180)
    seconds = time.perf_counter() - started
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    print(f"torchrun, 2 gloo ranks: {seconds:.1f}s")
    return {"tmp": tmp, "df": df, "proc": proc, "seconds": seconds}


def test_two_gloo_ranks_end_with_identical_weights(ddp_run):
    model_dir = ddp_run["tmp"] / "model"
    summary = json.loads(ddp_run["proc"].stdout.strip().splitlines()[-1])  # rank 0 prints it
    assert summary["world_size"] == 2 and summary["backend"] == "gloo" and summary["device"] == "cpu"
    result = json.loads((model_dir / "training.json").read_text())["result"]
    assert result["world_size"] == 2
    rank0, rank1 = result["rank_state_sha256"]  # each computed by its own rank, then all-gathered
    saved = state_digest(load_file(str(model_dir / "model.safetensors")))
    assert rank0 == rank1 == saved == summary["state_sha256"]
    # only rank 0 logs (rank 1 logs at WARNING level only)
    logs = ddp_run["proc"].stderr
    # the run logs under its module name (riskops.training.finetune_run); only rank 0 logs
    assert f"rank 0/2 riskops.training.finetune_run epoch 1/{EPOCHS}" in logs
    assert "rank 1/2 riskops.training.finetune_run epoch" not in logs
    # both ranks stopped early at the same epoch (else the collectives would hang) and restored
    # the same best epoch's weights (the digests above are of the restored weights)
    assert "early stop" in logs and 2 <= len(result["history"]) < EPOCHS
    assert result["best_epoch"] < len(result["history"])
    # rank 0 copied the folder to --output_uri
    uploaded = ddp_run["tmp"] / "uploaded"
    assert (uploaded / "model.safetensors").read_bytes() == (model_dir / "model.safetensors").read_bytes()


def test_the_result_is_a_trained_model(ddp_run):
    model_dir = ddp_run["tmp"] / "model"
    history = json.loads((model_dir / "training.json").read_text())["result"]["history"]
    assert len(history) >= 2 and history[-1]["train_loss"] < history[0]["train_loss"]
    # 975 training rows -> 16 global batches of 64 rows (32 per rank) per epoch
    assert history[0]["steps"] == 16
    set_seed(SEED)  # train_model builds the model right after seeding: the same initial weights
    initial = RiskModel.build(ModelConfig(encoder="tiny", finetune_layers=FINETUNE_LAYERS)).state_dict()
    final = load_file(str(model_dir / "model.safetensors"))
    frozen = ("encoder.embeddings.", "encoder.encoder.layer.0.", "encoder.encoder.layer.1.")
    top = "encoder.encoder.layer.2."
    for k, v in final.items():
        if k.startswith(frozen):
            assert torch.equal(v, initial[k]), k
    assert sum(not torch.equal(final[k], initial[k]) for k in final if k.startswith(top)) >= 4
    _, _, test = time_split(ddp_run["df"], 0.2, 0.15)
    p = RiskScorer.load(model_dir, device="cpu").predict_proba(build_model_frame(test))
    assert roc_auc_score(test["is_fraud"], p) > 0.85


def test_shard_batch_splits_evenly_and_covers_the_batch():
    batch = torch.arange(7)
    shards = [shard_batch(batch, r, 3) for r in range(3)]
    assert [len(s) for s in shards] == [3, 3, 3]  # padded 7 -> 9 by repeating rows 0, 1
    assert sorted(torch.cat(shards).tolist()) == [0, 0, 1, 1, 2, 3, 4, 5, 6]
    assert torch.equal(shard_batch(batch, 0, 1), batch)
    assert [shard_batch(torch.tensor([4]), r, 2).tolist() for r in range(2)] == [[4], [4]]


def test_distributed_without_launcher_env_is_a_clear_error(monkeypatch, capsys, tmp_path):
    for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    code = main(
        ["--distributed", "--training_set", "x.parquet", "--model_dir", str(tmp_path), "--device", "cpu"]
    )
    assert code == 2
    assert "torchrun" in capsys.readouterr().err


def test_s3_uris_honour_the_minio_endpoint(monkeypatch):
    """pyarrow's S3 client ignores AWS_ENDPOINT_URL; resolve_uri passes it on (no S3 call made here)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio-service.kubeflow.svc.cluster.local:9000")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    filesystem, path = resolve_uri("s3://riskops-data/training/training_set.parquet")
    options = filesystem.__reduce__()[1][0]
    assert (
        type(filesystem).__name__ == "S3FileSystem" and path == "riskops-data/training/training_set.parquet"
    )
    assert options["endpoint_override"] == "minio-service.kubeflow.svc.cluster.local:9000"
    assert options["scheme"] == "http" and options["region"] == "us-east-1"


def test_the_pytorchjob_runs_this_entry_point_with_flags_it_accepts():
    job = yaml.safe_load((REPO / "k8s/overlays/prod-gpu/pytorchjob-train.yaml").read_text())
    for rtype in ("Master", "Worker"):
        (c,) = job["spec"]["pytorchReplicaSpecs"][rtype]["template"]["spec"]["containers"]
        i = c["args"].index("-m")
        assert c["command"] == ["torchrun"] and c["args"][i + 1] == "riskops.training.train_job"
        args = build_parser().parse_args(c["args"][i + 2 :])  # exits on an unknown flag
        assert args.distributed and args.training_set.startswith("s3://")
        assert args.model_dir.startswith("/tmp/") and args.output_uri.startswith("s3://")
