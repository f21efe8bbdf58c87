"""The training/retraining pipeline: ingest -> GX gate -> Feast features -> fine-tune -> evaluate -> register.

One definition serves every place it runs: `kfp.local` on a laptop (SubprocessRunner in the current
venv) and Kubeflow Pipelines on a cluster. Cluster-only settings (GPU, node placement, secrets,
volumes) come from a *profile* and are attached with kfp-kubernetes; the local runner ignores them.
"""

from dataclasses import dataclass, field
from pathlib import Path

from kfp import dsl, kubernetes

from components.build_features import build_features_op, dataset_features_op
from components.evaluate import evaluate_dataset_op, evaluate_model_op
from components.ingest import ingest_dataset_op, ingest_transactions_op
from components.register import register_dataset_op, register_model_op
from components.train import train_dataset_op, train_model_op
from components.validate import validate_dataset_op, validate_transactions_op
from riskops.training.params import QUICK_TRAINING, TRAINING

PIPELINE_NAME = "riskops-training"
PIPELINES_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class ClusterProfile:
    """Kubernetes settings attached to the compiled pipeline (ignored by kfp.local)."""

    name: str
    train_gpus: int = 0
    gpu_node_selector: dict[str, str] = field(default_factory=dict)
    gpu_tolerations: tuple[dict[str, str], ...] = ()
    train_cpu: str = "2"
    train_memory: str = "8G"
    # one volume shared by the steps for the Feast repo, the registry and reports
    state_pvc: str | None = None
    state_mount: str = "/var/riskops"
    secret_name: str | None = "riskops-secrets"
    secret_env: dict[str, str] = field(default_factory=lambda: {"pii-key": "RISKOPS_PII_KEY"})


PROFILES: dict[str, ClusterProfile] = {
    "dev": ClusterProfile(name="dev", state_pvc="riskops-state"),
    "prod-gpu": ClusterProfile(
        name="prod-gpu",
        train_gpus=1,
        gpu_node_selector={"nvidia.com/gpu.present": "true"},
        gpu_tolerations=({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},),
        train_cpu="8",
        train_memory="32G",
        state_pvc="riskops-state",
    ),
}


def compiled_path(profile: str) -> Path:
    return PIPELINES_DIR / f"training_pipeline.{profile}.yaml"


def _attach(task: dsl.PipelineTask, profile: ClusterProfile) -> None:
    """Settings every step gets on a cluster: the shared state volume and the PII key secret."""
    task.set_caching_options(False)  # steps read/write the shared registry and feature repo
    if profile.state_pvc:
        kubernetes.mount_pvc(task, pvc_name=profile.state_pvc, mount_path=profile.state_mount)
    if profile.secret_name and profile.secret_env:
        kubernetes.use_secret_as_env(
            task, secret_name=profile.secret_name, secret_key_to_env=dict(profile.secret_env)
        )


def build_pipeline(profile_name: str = "dev"):
    """Return the pipeline function with the named profile's Kubernetes settings."""
    profile = PROFILES[profile_name]
    state = profile.state_mount

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Fraud/risk model training: GX gate, Feast features, fine-tuned transformer, "
        "evaluation against baselines, registry.",
    )
    def training_pipeline(
        source: str = "synthetic",
        rows: int = 20_000,
        seed: int = TRAINING.seed,
        fraud_rate: float = 0.015,
        input_path: str = "",
        fraud_rate_min: float = 0.001,
        fraud_rate_max: float = 0.10,
        feature_repo_dir: str = f"{state}/feature_repo",
        registry_root: str = f"{state}/registry",
        reports_dir: str = f"{state}/reports",
        encoder: str = TRAINING.encoder,
        epochs: int = TRAINING.epochs,
        max_steps: int = TRAINING.max_steps,
        finetune_layers: int = TRAINING.finetune_layers,
        max_train_rows: int = TRAINING.max_train_rows,
        test_fraction: float = TRAINING.test_fraction,
        val_fraction: float = TRAINING.val_fraction,
        recent_from: str = "",
        promotion: str = "if-none",
        git_commit: str = "",
        when_worse: str = "register",
    ):
        ingest = ingest_transactions_op(
            source=source, rows=rows, seed=seed, fraud_rate=fraud_rate, input_path=input_path
        ).set_display_name("ingest transactions")

        validate = validate_transactions_op(
            transactions=ingest.outputs["transactions"],
            fraud_rate_min=fraud_rate_min,
            fraud_rate_max=fraud_rate_max,
            reports_dir=reports_dir,
        ).set_display_name("validate (Great Expectations gate)")

        features = (
            build_features_op(transactions=ingest.outputs["transactions"], feature_repo_dir=feature_repo_dir)
            .after(validate)  # a failed gate stops the run here
            .set_display_name("build Feast features")
        )

        train = train_model_op(
            training_set=features.outputs["training_set"],
            epochs=epochs,
            encoder=encoder,
            max_steps=max_steps,
            finetune_layers=finetune_layers,
            max_train_rows=max_train_rows,
            seed=seed,
            test_fraction=test_fraction,
            val_fraction=val_fraction,
            recent_from=recent_from,
        ).set_display_name("fine-tune transformer")
        train.set_cpu_limit(profile.train_cpu).set_memory_limit(profile.train_memory)
        if profile.train_gpus:
            train.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(profile.train_gpus)
            for key, value in profile.gpu_node_selector.items():
                kubernetes.add_node_selector(train, label_key=key, label_value=value)
            for tol in profile.gpu_tolerations:
                kubernetes.add_toleration(train, **tol)

        evaluate = evaluate_model_op(
            training_set=features.outputs["training_set"],
            model=train.outputs["model"],
            test_fraction=test_fraction,
            val_fraction=val_fraction,
            recent_from=recent_from,
            reports_dir=reports_dir,
        ).set_display_name("evaluate vs baselines")

        register = register_model_op(
            model=train.outputs["model"],
            evaluation=evaluate.outputs["evaluation"],
            reference=evaluate.outputs["reference"],
            registry_root=registry_root,
            promotion=promotion,
            git_commit=git_commit,
            reports_dir=reports_dir,
            when_worse=when_worse,
        ).set_display_name("register model")

        for task in (ingest, validate, features, train, evaluate, register):
            _attach(task, profile)

    return training_pipeline


def compile_pipeline(profile: str = "dev", out: Path | None = None) -> Path:
    from kfp import compiler

    out = out or compiled_path(profile)
    compiler.Compiler().compile(build_pipeline(profile), package_path=str(out))
    return out


# ----------------------------------------------------------------------------- bring your own data
DATASET_PIPELINE_NAME = "riskops-training-dataset"


def dataset_compiled_path(profile: str) -> Path:
    return PIPELINES_DIR / f"dataset_pipeline.{profile}.yaml"


def build_dataset_pipeline(profile_name: str = "dev"):
    """The same six steps for a user's own dataset: the config (JSON/YAML text) drives every step.

    The GX suite, the Feast aggregates (mapped entities only) and the model (text mapped: text +
    tabular transformer; otherwise the FT-Transformer) adapt to the mapping; see riskops/byod/.
    Over 80 lines because the pipeline's signature lists every parameter a user can set (KFP reads
    them from it); the body is the six steps wired in order.
    """
    profile = PROFILES[profile_name]
    state = profile.state_mount

    @dsl.pipeline(
        name=DATASET_PIPELINE_NAME,
        description="Fraud/risk model training on a user's own dataset config: mapping check, generated GX "
        "gate, Feast aggregates of the mapped entities, transformer (text) or FT-Transformer (tabular), "
        "evaluation against LightGBM/logistic regression on the config's time split, registry.",
    )
    def dataset_pipeline(
        dataset_config: str,
        max_rows: int = 0,
        seed: int = QUICK_TRAINING.seed,
        fraud_rate_min: float = 0.0001,
        fraud_rate_max: float = 0.5,
        feature_repo_dir: str = f"{state}/datasets/feature_repo",
        registry_root: str = f"{state}/registry",
        reports_dir: str = f"{state}/reports",
        encoder: str = QUICK_TRAINING.encoder,
        epochs: int = QUICK_TRAINING.epochs,
        max_steps: int = QUICK_TRAINING.max_steps,
        finetune_layers: int = QUICK_TRAINING.finetune_layers,
        max_train_rows: int = QUICK_TRAINING.max_train_rows,
        ft_max_epochs: int = QUICK_TRAINING.ft_max_epochs,
        max_train_seconds: float = QUICK_TRAINING.max_train_seconds,
        promotion: str = "if-none",
        git_commit: str = "",
    ):
        ingest = ingest_dataset_op(dataset_config=dataset_config, max_rows=max_rows).set_display_name(
            "ingest dataset (mapping check)"
        )
        validate = validate_dataset_op(
            dataset=ingest.outputs["dataset"],
            dataset_config=dataset_config,
            fraud_rate_min=fraud_rate_min,
            fraud_rate_max=fraud_rate_max,
            reports_dir=reports_dir,
        ).set_display_name("validate (generated GX suite)")
        features = (
            dataset_features_op(
                dataset=ingest.outputs["dataset"],
                dataset_config=dataset_config,
                feature_repo_dir=feature_repo_dir,
            )
            .after(validate)
            .set_display_name("entity aggregates (Feast)")
        )
        train = train_dataset_op(
            training_set=features.outputs["training_set"],
            dataset_config=dataset_config,
            encoder=encoder,
            epochs=epochs,
            max_steps=max_steps,
            finetune_layers=finetune_layers,
            max_train_rows=max_train_rows,
            ft_max_epochs=ft_max_epochs,
            max_train_seconds=max_train_seconds,
            seed=seed,
        ).set_display_name("train (transformer or FT-Transformer)")
        train.set_cpu_limit(profile.train_cpu).set_memory_limit(profile.train_memory)
        if profile.train_gpus:
            train.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(profile.train_gpus)
            for key, value in profile.gpu_node_selector.items():
                kubernetes.add_node_selector(train, label_key=key, label_value=value)
            for tol in profile.gpu_tolerations:
                kubernetes.add_toleration(train, **tol)
        evaluate = evaluate_dataset_op(
            training_set=features.outputs["training_set"],
            model=train.outputs["model"],
            dataset_config=dataset_config,
            reports_dir=reports_dir,
        ).set_display_name("evaluate vs LightGBM / logistic regression")
        register = register_dataset_op(
            model=train.outputs["model"],
            evaluation=evaluate.outputs["evaluation"],
            dataset_config=dataset_config,
            registry_root=registry_root,
            promotion=promotion,
            git_commit=git_commit,
            reports_dir=reports_dir,
        ).set_display_name("register model")
        for task in (ingest, validate, features, train, evaluate, register):
            _attach(task, profile)

    return dataset_pipeline


def compile_dataset_pipeline(profile: str = "dev", out: Path | None = None) -> Path:
    from kfp import compiler

    out = out or dataset_compiled_path(profile)
    compiler.Compiler().compile(build_dataset_pipeline(profile), package_path=str(out))
    return out
