"""`hfdistac demo` end to end on the session's example suite."""

from __future__ import annotations

import json

import pytest

from hfdistac.cli.main import main


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.slow
def test_demo_end_to_end_on_the_session_suite(example_suite, tmp_path, capsys):
    code, out, err = run_cli(capsys, "demo", tmp_path / "demo", "--suite", example_suite, "--condition-steps", "10",
                             "--kappa-grid", "0.5", "1", "--no-progress")
    assert code == 0, err
    summary = json.loads((tmp_path / "demo" / "demo.json").read_text())
    assert list(summary["table"]) == ["original", "norm mismatch", "norm mismatch + DisTaC", "low confidence",
                                      "low confidence + DisTaC"]
    for scenario in summary["table"].values():
        assert {"zero-shot", "individual", "task_arithmetic", "ties", "consensus", "tsvm", "average"} <= set(scenario)
    assert "Task Arithmetic" in out and (tmp_path / "demo" / "table1.md").is_file()
    assert (tmp_path / "demo" / "kappa_sweep.png").is_file() and len(summary["kappa_sweep"]) == 4
    for cond in (tmp_path / "demo" / "conditioned").iterdir():
        assert {"model.safetensors", "task_vector.safetensors", "report.json", "README.md"} <= \
            {p.name for p in cond.iterdir()}


def test_demo_refuses_an_incomplete_suite(tmp_path, capsys):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "suite.json").write_text("{}")
    code, _, err = run_cli(capsys, "demo", tmp_path / "demo", "--suite", tmp_path / "half")
    assert code == 2 and "not a complete example suite" in err
