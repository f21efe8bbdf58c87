"""Bring your own data through the pipeline: one module per step, as plain functions.

A dataset config (riskops.data.datasets) maps a user's columns to roles; every step adapts to it:

* **ingest** (`ingest.py`) — read the source, check the mapping (``MappingError`` names
  every missing or mistyped column), hash PII, keep only the mapped columns, sort by event time,
  optionally keep only the newest ``max_rows`` rows (a contiguous time window, so windowed
  aggregates and the time split stay honest).
* **validate** (`validate.py`) — a Great Expectations suite generated from the mapping
  (build_dataset_suite): columns present, label not null and in {0, 1} with a plausible
  fraud rate, event time not null / timezone-aware / not in the future, numeric columns numeric and
  finite, categorical and text columns strings. A failure names the expectation, column, count
  and example rows/values, like the built-in gate.
* **features** (`features.py`) — windowed per-entity aggregates through Feast
  (the same riskops.features.aggregates code and Feast repo as the built-in schema) for the MAPPED entities
  only, and only the aggregates the mapping can support (`config.py`: aggregate_feature_names): no
  entities, no aggregates and no Feast at all (e.g. ULB); no ``amount`` column, no amount sums.
* **train** (`train.py`) — text columns mapped: the text + tabular transformer
  (riskops.training.model.RiskModel fine-tuned by riskops.training.finetune.train_model, with this dataset's own
  numeric/categorical columns); no text: the FT-Transformer (riskops.training.tabular) with Platt /
  temperature calibration chosen on validation (riskops.training.calibration).
* **evaluate** (`evaluate.py`, baselines in `baselines.py`) — the config's time split (riskops.data.datasets.fdb_split +
  train_val_split), the model vs LightGBM and logistic regression fitted on the same rows, the
  decision policy set on validation, metrics on the test period.
* **register** (`register.py`) — a registry version under the dataset's own model
  name (``risk-model-<dataset>``): the serving champion (``risk-model``, built-in schema) is never
  replaced by a model that expects other columns.
"""
