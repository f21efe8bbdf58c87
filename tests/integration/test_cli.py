import subprocess
import sys

import pytest

from cli.main import build_parser, main

SUBCOMMANDS = [
    ["generate"], ["validate"], ["features"], ["train"], ["pipeline"], ["pipeline", "compile"],
    ["pipeline", "run"], ["models"], ["models", "list"], ["models", "show"], ["models", "promote"], ["serve"], ["demo"],
]


@pytest.mark.parametrize("argv", SUBCOMMANDS, ids=" ".join)
def test_every_subcommand_explains_itself(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([*argv, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: riskops " + " ".join(argv))
    assert len(out.splitlines()) > 3


def test_console_script_is_installed_and_lists_commands():
    out = subprocess.run([sys.executable, "-m", "cli.main", "--help"], capture_output=True, text=True, check=True)
    for cmd in ("generate", "validate", "features", "train", "pipeline", "models", "demo"):
        assert cmd in out.stdout


def test_the_drift_choices_are_the_generators_scenarios():
    # written out in cli/arguments.py so that `riskops --help` does not import the generator
    from cli.arguments import DRIFT_SCENARIOS
    from riskops.data.generator import SCENARIOS

    assert ("normal", *DRIFT_SCENARIOS) == SCENARIOS


def test_help_does_not_import_the_heavy_libraries():
    code = ("import sys\nfrom cli.main import build_parser\nbuild_parser().format_help()\n"
            "print(sorted(m for m in ('pandas', 'numpy', 'torch', 'kfp', 'feast', 'kserve') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_models_list_on_empty_registry_says_what_to_do(capsys, tmp_path, monkeypatch):
    # a home path long enough that a 120-column console would have wrapped the message
    monkeypatch.setenv("RISKOPS_HOME", str(tmp_path / ("a-long-folder-name-" * 6) / "home"))
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "train one with `riskops pipeline run`" in out and out.count("\n") == 1


def test_generate_writes_parquet_and_jsonl(tmp_path, capsys):
    import pandas as pd

    from riskops.data.generator import read_transactions

    for ext in ("parquet", "jsonl"):
        out = tmp_path / f"t.{ext}"
        assert main(["generate", "--rows", "500", "--out", str(out), "--seed", "3"]) == 0
        df = read_transactions(out)
        assert len(df) == 500 and df["transaction_id"].is_unique
        assert isinstance(df["event_timestamp"].dtype, pd.DatetimeTZDtype)
    assert "wrote 500 transactions" in capsys.readouterr().out


def test_generate_features_train_gives_a_model_that_reads_histories(tmp_path, capsys, monkeypatch):
    """`riskops train` trains what the pipeline trains: the history branch and the members asked for."""
    import json

    monkeypatch.setenv("RISKOPS_HOME", str(tmp_path / "home"))
    tx, ts, model = tmp_path / "t.parquet", tmp_path / "ts.parquet", tmp_path / "model"
    assert main(["generate", "--rows", "1500", "--out", str(tx), "--seed", "5"]) == 0
    assert main(["features", str(tx), "--repo", str(tmp_path / "repo"), "--out", str(ts)]) == 0
    assert main(["train", str(ts), "--out", str(model), "--encoder", "tiny", "--epochs", "1", "--members", "2"]) == 0
    config = json.loads((model / "config.json").read_text())
    assert config["sequence"] is True and config["members"] == 2
    assert f"model -> {model}" in capsys.readouterr().out.replace("\n", "")


def test_a_failed_gate_prints_the_data_as_written_not_as_markup(tmp_path, capsys):
    """Examples quoted from the data ("[red]", "[/]") must print verbatim, never crash rich."""
    import json

    from cli.console import print_failure

    (tmp_path / "validation_report.html").write_text("<html></html>")
    failure = {"expectation": "expect_column_values_to_be_in_set", "column": "currency",
               "details": "2 unexpected values", "examples": ["[red]", "[/]"]}
    (tmp_path / "validation_report.json").write_text(json.dumps({"failures": [failure]}))
    print_failure(_Failure(tmp_path))
    out = capsys.readouterr().out
    assert "['[red]', '[/]']" in out and "currency" in out and "[/] gate" in out
    assert "champion keeps serving" in out


class _Failure(Exception):
    def __init__(self, reports_dir):
        super().__init__("data validation failed: [/] gate")
        self.reports_dir = reports_dir


def test_demos_clean_up_on_sigterm(tmp_path):
    # the demos stop their model server in `finally`; SIGTERM must reach it (not kill Python outright)
    marker = tmp_path / "cleaned"
    code = (
        "import time\n"
        "from cli.commands.demos import exit_on_sigterm\n"
        "exit_on_sigterm()\n"
        "try:\n"
        "    print('ready', flush=True)\n"
        "    time.sleep(60)\n"
        "finally:\n"
        f"    open({str(marker)!r}, 'w').write('server stopped')\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.terminate()
    assert proc.wait(timeout=30) == 143
    assert marker.read_text() == "server stopped"


def test_demo_refuses_a_home_an_earlier_run_used_and_fresh_empties_it(tmp_path, monkeypatch, capsys):
    # the demo replays the same world: an earlier run's prediction log and online entity state would read
    # as live traffic, so a used home is refused (nothing deleted) unless --fresh empties it
    from cli.demo import empty_home
    from riskops.settings import Paths

    home = tmp_path / "home"
    (home / "prediction_log").mkdir(parents=True)
    (home / "prediction_log" / "part-0.parquet").write_bytes(b"earlier traffic")
    (home / "feature_repo" / "data").mkdir(parents=True)
    (home / "feature_repo" / "data" / "online.db").write_bytes(b"pushed entity state")
    (home / "registry").mkdir()  # empty: not an earlier run's state by itself
    monkeypatch.setenv("RISKOPS_HOME", str(home))
    monkeypatch.setenv("COLUMNS", "400")  # the whole message on one line
    assert main(["demo"]) == 2
    out = capsys.readouterr().out
    assert "earlier run's state (feature_repo, prediction_log)" in out and "riskops demo --fresh" in out
    assert (home / "prediction_log" / "part-0.parquet").exists()  # refused: nothing deleted

    (home / "notes.txt").write_text("the user's own file")
    with pytest.raises(SystemExit, match="notes.txt"):
        empty_home(Paths(home))  # a folder riskops does not own alone is never emptied
    assert (home / "prediction_log").exists()
    (home / "notes.txt").unlink()
    (home / "cache").mkdir()  # the packaged-data cache is not state: kept
    empty_home(Paths(home))
    assert sorted(p.name for p in home.iterdir()) == ["cache"]
