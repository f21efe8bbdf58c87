"""One module per command group of `riskops`; each has `register(subparsers)` and its `cmd_*` handlers.

Heavy libraries (pandas, torch, feast, GX, kfp, kserve, evidently) are imported inside the handlers
that need them, so that building the parser, and so `riskops --help`, stays instant.
"""
