"""riskops serving: the KServe model server, its transformer and predictor, and what they share.

Importing this package changes nothing in the process: the entry points call
`serving.environment.prepare_process_environment` themselves.
"""
