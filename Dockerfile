# syntax=docker/dockerfile:1
# The one riskops image: pipeline components, KServe transformer + predictor, Feast feature
# server (`feast serve`), the drift monitor and the training job all run from it.
#
#   docker build -t ghcr.io/riskops/riskops:0.1.0 .
#   # CUDA build for the GPU training job (same Dockerfile, CUDA torch wheels; pick the
#   # index matching the nodes' driver):
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 \
#     -t ghcr.io/riskops/riskops-cuda:0.1.0 .
#
# No secrets are baked in: credentials arrive at run time from the riskops-secrets Secret.

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# ---------------------------------------------------------------------------- build stage
FROM ${PYTHON_IMAGE} AS build

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv

WORKDIR /src

# torch first and exactly: an unpinned torch from the default index pulls the multi-GB CUDA
# build. requirements.lock pins torch==2.13.0, which the installed +cpu wheel satisfies.
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

# Then the lock, plus the cluster-only clients constrained by it: redis/hiredis for Feast's
# Redis online store, boto3 for the S3 registry and offline store (what feast[redis,aws] adds).
COPY requirements.lock ./
RUN pip install -r requirements.lock \
    && pip install -c requirements.lock \
       redis==7.4.1 hiredis==3.5.0 \
       boto3==1.44.5 botocore==1.44.5 s3transfer==0.19.3 jmespath==1.1.0

# the project itself, without touching the resolved dependencies
COPY pyproject.toml README.md ./
COPY riskops ./riskops
COPY components ./components
COPY pipelines ./pipelines
COPY serving ./serving
COPY feature_repo ./feature_repo
COPY cli ./cli
RUN pip install --no-deps . && pip check

# -------------------------------------------------------------------------- runtime stage
FROM ${PYTHON_IMAGE}

# libgomp1: LightGBM links the system OpenMP runtime (torch bundles its own).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 riskops \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin riskops

COPY --from=build /opt/venv /opt/venv

# Offline at run time (no model hub, no telemetry); everything writable lives under /tmp,
# an emptyDir in the manifests, so the root filesystem can be mounted read-only.
# (DL3064 fires on the word TOKEN in TOKENIZERS_PARALLELISM; no value here is sensitive.)
# hadolint ignore=DL3064
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    DO_NOT_TRACK=1 \
    FEAST_USAGE=False \
    GX_ANALYTICS_ENABLED=False \
    TOKENIZERS_PARALLELISM=false \
    HOME=/tmp \
    HF_HOME=/tmp/hf \
    MPLCONFIGDIR=/tmp/matplotlib \
    RISKOPS_HOME=/tmp/riskops

WORKDIR /tmp
USER 10001:10001

# 8080: KServe transformer/predictor HTTP
EXPOSE 8080

CMD ["riskops", "--help"]
