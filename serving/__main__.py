"""`python -m serving --port 8080 [--model-version V] [--home DIR] [--grpc]`: see serving.server."""

import sys

from serving.environment import prepare_process_environment

# before serving.server imports KServe, and KServe prometheus_client: see serving/environment.py
prepare_process_environment()

# kserve.model_server parses sys.argv at import time (parse_known_args); keep our flags away from it
_argv, sys.argv = sys.argv[1:], sys.argv[:1]

from serving.server import main  # noqa: E402

main(_argv)
