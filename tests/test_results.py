"""Results that last: resume after an interruption, provenance in every record, and
`harness report` re-rendering the very table the run printed."""

import json
from collections import Counter

from helpers import tiny_sets


def test_an_interrupted_suite_resumes_without_repeating_finished_runs(cli, write_suite, tmp_path, monkeypatch):
    import harness.launch.runner

    real_fit = harness.launch.runner.fit
    trained: list[str] = []

    def fit_then_interrupt(run, progress=None, **kw):
        if len(trained) == 2 and not interrupted:  # Ctrl-C during the third run
            interrupted.append(run.run_id)
            raise KeyboardInterrupt
        trained.append(run.run_id)
        return real_fit(run, progress, **kw)

    interrupted: list[str] = []
    monkeypatch.setattr(harness.launch.runner, "fit", fit_then_interrupt)
    suite = write_suite("name: resume\nmatrix: {max_len: [16, 24, 32]}\n")
    out = tmp_path / "out"
    # in this process: the test interrupts harness.launch.runner.fit
    args = ("run", suite, "--out", out, "--no-progress", "--isolation", "none", *tiny_sets(max_len=None))

    code, stdout, stderr = cli(*args)
    assert code == 130
    assert "interrupted: 2 finished runs kept" in stderr and f"To resume: harness run {suite} --out {out}" in stderr
    kept = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["run_id"] for r in kept] == trained  # the two finished runs are on disk

    code, stdout, stderr = cli(*args)
    assert code == 0, stderr
    assert interrupted and trained[2] == interrupted[0]  # the interrupted run ran again, from scratch
    assert Counter(trained) == {rid: 1 for rid in trained} and len(trained) == 3  # nothing trained twice
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["config"]["max_len"] for r in records] == [16, 24, 32]
    assert all(r["status"] == "ok" for r in records)

    # provenance: every record says what ran, where, with what
    for r in records:
        env = r["env"]
        assert r["suite"] == "resume"
        assert r["config"]["seed"] == 42 and r["config"]["device"] == "cpu"
        assert env["harness_version"] and env["python"] and env["torch"] and env["transformers"]
        assert env["device_name"] and "cuda" in env
        assert env["harness_git_sha"] is None or len(env["harness_git_sha"].split("-")[0]) == 40

    # the run wrote its plot (it sweeps MAX_LEN), and `report` prints the table the run printed
    png = (out / "plot.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    code, report_out, report_err = cli("report", out)
    assert code == 0, report_err
    assert report_out == stdout
    assert "resume (3 runs)" in stdout


def test_seeds_repeat_a_configuration_and_the_table_shows_mean_and_spread(cli, write_suite, tmp_path):
    suite = write_suite("name: seeds\nmatrix: {seed: [1, 2]}\n")
    out = tmp_path / "out"
    code, stdout, stderr = cli("run", suite, "--out", out, "--no-progress", *tiny_sets(max_len=16))
    assert code == 0, stderr
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["config"]["seed"] for r in records) == [1, 2]
    assert len({r["run_id"] for r in records}) == 2  # the seed is part of the configuration
    lines = [line for line in stdout.splitlines() if "│" in line and "ok" in line]
    assert len(lines) == 1  # one configuration, one row
    assert "│ 2 " in lines[0] and "±" in lines[0]  # two runs, mean ± spread
    assert not (out / "plot.png").exists()  # nothing numeric is swept: no plot


def test_an_installed_copy_inside_another_git_repository_reports_no_commit(tmp_path):
    """A .venv inside a user's own repository must not record the user's commit as ours."""
    import importlib.util
    import shutil
    import subprocess

    import harness.loop.env

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    copy = tmp_path / "site-packages" / "harness_measure_copy.py"
    copy.parent.mkdir()
    shutil.copy(harness.loop.env.__file__, copy)
    spec = importlib.util.spec_from_file_location("harness_measure_copy", copy)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module._git_sha() is None
    assert harness.loop.env._git_sha() is None or len(harness.loop.env._git_sha().split("-")[0]) == 40
