"""Serving benchmark, part 1: the servers (the floor, ours), the benchmark's home and its requests.

The floor is a bare KServe model returning a constant; `--floor-front fast` serves it behind
serving.fast_path, so the report separates what the fast path saves from what our own work costs.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL = "risk-model"

# ---------------------------------------------------------------------------------------------
# The floor: a bare KServe model returning a constant
# ---------------------------------------------------------------------------------------------


def run_floor_server(port: int, front: str = "kserve") -> None:
    """front "kserve": plain KServe (the goals' floor); "fast": behind serving.fast_path."""
    sys.argv = sys.argv[:1]  # kserve parses argv at import
    from serving.environment import prepare_process_environment

    prepare_process_environment()  # before kserve imports prometheus_client: see serving/environment.py
    from kserve import Model, ModelServer

    from serving.fast_path import fast_rest_server

    class Constant(Model):
        def __init__(self) -> None:
            super().__init__(MODEL)
            self.ready = True

        async def predict(self, payload, headers=None, response_headers=None):
            return {"predictions": [{"risk_score": 0.5, "decision": "approve"} for _ in payload["instances"]]}

    server = ModelServer(http_port=port, enable_grpc=False, enable_latency_logging=False)
    with fast_rest_server("127.0.0.1") if front == "fast" else contextlib.nullcontext():
        server.start([Constant()])


# ---------------------------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------------------------


def log(msg: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def registry_minilm() -> tuple[Path, str] | None:
    """The riskops registry's champion, if it is a trained MiniLM model."""
    from riskops.registry.store import ModelRegistry, RegistryError
    from riskops.settings import paths

    try:
        mv = ModelRegistry(paths().registry).resolve("champion")
    except RegistryError:
        return None
    cfg = json.loads((mv.path / "config.json").read_text()) if (mv.path / "config.json").exists() else {}
    return (mv.path, mv.version) if cfg.get("encoder") == "minilm" else None


def setup_home(work: Path, rows: int, encoder: str, model_dir: str | None, seed: int, warm_texts: int):
    """Feast repo from the older half of the data, a model in a fresh registry; returns (home, replay, model)."""
    from riskops.data.generator import GeneratorConfig, generate
    from riskops.features.build import build_features
    from riskops.registry.store import ModelRegistry
    from riskops.settings import paths

    home = paths(work / "home")
    df = generate(GeneratorConfig(rows=rows, seed=seed)).sort_values("event_timestamp", kind="stable")
    df = df.reset_index(drop=True)
    cut = len(df) // 2
    history, replay = df.iloc[:cut], df.iloc[cut:]
    t = time.perf_counter()
    feats = build_features(history, home.feature_repo)
    log(f"Feast repo from {len(history)} transactions in {time.perf_counter() - t:.0f}s")

    model_info: dict
    found = registry_minilm() if encoder in ("auto", "minilm") and not model_dir else None
    if model_dir:
        src, model_info = Path(model_dir), {"source": f"--model-dir {model_dir}"}
    elif found:
        src, model_info = found[0], {"source": f"registry champion {found[1]} ({found[0]})"}
    else:
        enc = "minilm" if encoder == "minilm" else "tiny"
        from riskops.training.finetune import TrainConfig, train_from_training_set

        t = time.perf_counter()
        steps = 30 if enc == "minilm" else None
        trained = train_from_training_set(
            feats.training_frame,
            work / "model",
            TrainConfig(encoder=enc, epochs=1, max_train_rows=3000, max_steps=steps, progress=False),
        )
        src = trained.model_dir
        model_info = {
            "source": f"trained here: {enc} encoder, 1 epoch on {min(3000, len(history))} rows"
            + (f", {steps} steps" if steps else "")
            + f" ({time.perf_counter() - t:.0f}s), val PR-AUC {trained.val_pr_auc:.3f}"
        }
        if not (src / "policy.json").exists():
            (src / "policy.json").write_text(json.dumps({"review": 0.5, "block": 0.9}))
    cfg = json.loads((src / "config.json").read_text())
    model_info.update(
        encoder=cfg.get("encoder"), encoder_layers=(cfg.get("encoder_config") or {}).get("num_hidden_layers")
    )
    registry = ModelRegistry(home.registry)
    mv = registry.register(src)
    registry.set_alias("champion", mv.version)
    if warm_texts > 0:
        # Optional (the product catalogue feed is the default way, see main): replace the copy's
        # warm texts (its training world's) with this world's most frequent history texts.
        from riskops.features.contract import TEXT_COLUMN, build_model_frame
        from riskops.training.scorer import WARM_TEXTS_FILE

        texts = build_model_frame(history)[TEXT_COLUMN].value_counts().index[:warm_texts].tolist()
        (mv.path / WARM_TEXTS_FILE).write_text(json.dumps(texts))
        model_info["warm_texts"] = (
            f"{len(texts)} most frequent texts of the Feast history (of {history.shape[0]} rows)"
        )
    return home, replay, model_info


def feed_catalogue(url: str, rows: int, seed: int, chunk: int = 2000) -> dict:
    """POST the replayed world's product catalogue to /v1/catalogue, as a shop's product feed would."""
    import httpx

    from riskops.data.generator import GeneratorConfig, product_catalogue

    products = product_catalogue(GeneratorConfig(rows=rows, seed=seed))
    cols = ["product_title", "product_category", "merchant_category"]
    records = products[cols].to_dict("records")
    started = time.perf_counter()
    new = 0
    with httpx.Client(timeout=600) as client:
        for i in range(0, len(records), chunk):
            r = client.post(f"{url}/v1/catalogue", json={"products": records[i : i + chunk]})
            r.raise_for_status()
            new += r.json()["new"]
        state = client.get(f"{url}/v1/catalogue").json()
    return {
        "products": len(records),
        "new_texts": new,
        "cached_in_model": state["cached_in_model"],
        "seconds": round(time.perf_counter() - started, 2),
    }


def request_bodies(replay, n: int) -> list[bytes]:
    """n single-transaction v1 bodies in time order (cycled with shifted times and fresh ids if needed)."""
    import orjson

    cols = [c for c in replay.columns if c not in ("is_fraud", "fraud_type", "order_status")]
    recs = replay[cols].to_dict("records")
    span = replay["event_timestamp"].max() - replay["event_timestamp"].min() + timedelta(seconds=1)
    out = []
    for i in range(n):
        cycle, j = divmod(i, len(recs))
        r = dict(recs[j])
        r["event_timestamp"] = (r["event_timestamp"] + cycle * span).isoformat()
        if cycle:
            r["transaction_id"] = f"{r['transaction_id']}-c{cycle}"
        r = {k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()}
        out.append(orjson.dumps({"instances": [r]}))
    return out


def start_server(cmd: list[str], port: int, logfile: Path, timeout: float = 300) -> subprocess.Popen:
    import httpx

    from serving.environment import server_environment

    # this process imported Feast, which set PROMETHEUS_MULTIPROC_DIR to a temp dir of its own:
    # neither server should inherit it (serving/environment.py)
    env = server_environment(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")
    with open(logfile, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}):\n{logfile.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"server not ready in {timeout}s:\n{logfile.read_text()[-3000:]}")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

