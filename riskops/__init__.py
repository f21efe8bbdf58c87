"""riskops: real-time e-commerce fraud/risk scoring that keeps itself accurate.

The shared core imported by components/, pipelines/, serving/ and the CLI: the transaction
schema, PII hashing, configuration, the data generator, the model and the model registry.
"""

__version__ = "0.1.0"
