"""Helpers shared by the test suites: data builders (`support.data`) and the model server (`support.servers`).

Test modules import these, never each other (`tests/` is on pytest's pythonpath).
"""
