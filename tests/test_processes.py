"""Worker processes (hfdistac.processes) and the demo's job queue (hfdistac.demo.jobs.run_queue)."""

from __future__ import annotations

import sys

import pytest

from hfdistac.errors import DataError, HfDistacError
from hfdistac.processes import run_worker_processes


def _python(code: str):
    return lambda index, count: [sys.executable, "-c", code.replace("INDEX", str(index))]


def test_workers_run_until_every_job_is_done(tmp_path):
    code = f"import pathlib; pathlib.Path({str(tmp_path)!r}, 'job-INDEX').touch()"
    run_worker_processes(_python(code), 3, tmp_path, total=3, what="test",
                         finished=lambda: len(list(tmp_path.glob("job-*"))))
    assert sorted(p.name for p in tmp_path.glob("job-*")) == ["job-0", "job-1", "job-2"]


def test_a_recorded_user_error_is_raised_as_itself(tmp_path):
    code = ("import pathlib; from hfdistac.errors import DataError; from hfdistac.processes import write_worker_error\n"
            f"write_worker_error(pathlib.Path({str(tmp_path)!r}), INDEX, DataError('split \\'holdout\\' is missing', "
            "'build the suite again')); raise SystemExit(1)")
    with pytest.raises(DataError, match="holdout") as e:
        run_worker_processes(_python(code), 1, tmp_path, total=1, what="test", finished=lambda: 0)
    assert e.value.hint == "build the suite again"


def test_a_crash_names_the_worker_and_shows_its_log(tmp_path):
    with pytest.raises(RuntimeError, match=r"(?s)test worker 0 exited with code 4.*went wrong"):
        run_worker_processes(_python("print('went wrong'); raise SystemExit(4)"), 1, tmp_path, total=1, what="test",
                             finished=lambda: 0)


def test_workers_that_exit_with_jobs_left_are_an_error(tmp_path):
    with pytest.raises(RuntimeError, match="finished with 0 of 2 jobs done"):
        run_worker_processes(_python("pass"), 2, tmp_path, total=2, what="test", finished=lambda: 0)


def test_the_queue_respects_dependencies_and_claims(tmp_path, monkeypatch):
    from hfdistac.demo import jobs

    ran = []
    monkeypatch.setattr(jobs, "run_job", lambda job, config: ran.append(job["name"]))
    queue = [{"name": "merge", "after": [1, 2]}, {"name": "condition a"}, {"name": "condition b"},
             {"name": "claimed elsewhere"}]
    (tmp_path / "claims").mkdir()
    (tmp_path / "claims" / "3").touch()
    done = []
    jobs.run_queue(tmp_path, queue, config=None, on_done=done.append)
    assert ran == ["condition a", "condition b", "merge"] and done == [1, 2, 0]
    assert all(jobs.done_path(tmp_path, i).exists() for i in (0, 1, 2))


def test_a_user_error_in_a_step_stops_the_demo_with_that_error(tmp_path, monkeypatch):
    """The demo's worker processes hand a step's error to the parent, which raises it as the CLI shows it."""
    import json

    from hfdistac.demo import DemoConfig
    from hfdistac.demo.jobs import JOBS_FILE
    from hfdistac.demo.run import _run_jobs

    config = DemoConfig(directory=str(tmp_path), workers=2, progress=False)
    missing = tmp_path / "no-such-recipe.yaml"
    steps = [{"kind": "merge", "after": [], "recipe": str(missing), "out": str(tmp_path / "m"),
              "methods": ["task_arithmetic"], "density": 0.2}] * 2
    with pytest.raises(HfDistacError, match="no-such-recipe.yaml"):
        _run_jobs(tmp_path, steps, config)
    assert json.loads((tmp_path / ".jobs" / JOBS_FILE).read_text())["config"]["workers"] == 2
