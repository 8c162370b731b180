"""The CLI in-process: exit codes, one-line errors, validate, resume."""

import json

import pytest

from helpers import tiny_sets


def one_red_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    return lines[0]


def test_validate_prints_the_expanded_runs_and_runs_nothing(cli, write_suite, tmp_path):
    suite = write_suite("name: v\nmatrix: {max_len: [16, 32, 64]}\n")
    code, out, err = cli("validate", suite)
    assert code == 0, err
    assert "v: 3 runs" in out
    for n in ("16", "32", "64"):
        assert n in out
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    "suite_text, sets, env, expected",
    [
        ("name: x\ndefaults: {max_len: [64\n", [], {}, "malformed YAML"),
        ("name: x\ndefaults: {dataset: colaa}\n", [], {}, "unknown dataset 'colaa'. Did you mean 'cola'?"),
        ("name: x\n", [], {"HARNESS_DATA_DIR": "/no/such/dir"}, "HARNESS_DATA_DIR=/no/such/dir: no such directory"),
        ("name: x\n", [], {"HARNESS_DATA_DIR": "{tmp}"}, "dataset 'cola': missing raw/in_domain_train.tsv"),
        ("name: x\ndefaults: {model: /no/such/model}\n", [], {}, "model '/no/such/model': no such checkpoint directory"),
        ("name: x\ndefaults: {model: some-org/not-cached-model}\n", [], {},
         "model 'some-org/not-cached-model': not a local directory, not in the Hugging Face cache"),
        ("name: x\ndefaults: {max_len: 1024}\n", [], {}, "defaults.max_len: MAX_LEN 1024 is above the model's position limit (512"),
    ],
)
def test_user_mistakes_exit_2_with_one_line(cli, write_suite, tmp_path, monkeypatch, suite_text, sets, env, expected):
    for key, value in env.items():
        monkeypatch.setenv(key, value.format(tmp=tmp_path))
    suite = write_suite(suite_text)
    code, out, err = cli("run", suite, "--out", tmp_path / "out", "--no-progress", *sets)
    assert code == 2
    assert expected in one_red_line(err)
    assert not (tmp_path / "out" / "results.jsonl").exists()


@pytest.mark.parametrize("suite_text", ["name: x\ndefaults: {max_len: 1024}\n", "name: x\ndefaults: {dataset: colaa}\n"])
def test_a_failed_start_leaves_no_output_folder(cli, write_suite, tmp_path, suite_text):
    code, _, err = cli("run", write_suite(suite_text), "--out", tmp_path / "new" / "out", "--no-progress")
    assert code == 2, err
    assert not (tmp_path / "new").exists(), "a run that never started must leave nothing behind"


def test_out_that_is_a_file_is_refused(cli, write_suite, tmp_path):
    target = tmp_path / "taken"
    target.write_text("precious")
    code, _, err = cli("run", write_suite("name: x\n"), "--out", target, "--no-progress")
    assert code == 2
    assert "exists and is not a directory" in one_red_line(err)
    assert target.read_text() == "precious"


def test_a_second_run_resumes_and_rerun_forces(cli, write_suite, tmp_path, monkeypatch):
    import harness.launch.runner

    trained = []
    real_fit = harness.launch.runner.fit
    monkeypatch.setattr(harness.launch.runner, "fit", lambda run, progress=None, **kw: trained.append(run.run_id) or real_fit(run, progress, **kw))
    suite = write_suite("name: r\nmatrix: {max_len: [16, 24]}\n")
    out = tmp_path / "out"
    # in this process: the test counts the runs trained through harness.launch.runner.fit
    args = ("run", suite, "--out", out, "--no-progress", "--isolation", "none", *tiny_sets(max_len=None))
    assert cli(*args)[0] == 0
    assert len(trained) == 2
    first = (out / "results.jsonl").read_text()
    code, stdout, _ = cli(*args)
    assert code == 0 and len(trained) == 2  # nothing re-run
    assert (out / "results.jsonl").read_text() == first  # nothing lost or rewritten
    assert "mcc" in stdout  # the table still shows the recorded runs
    assert cli(*args, "--rerun")[0] == 0
    assert len(trained) == 4
    records = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["run_id"] for r in records) == sorted(set(trained))  # replaced, not duplicated


@pytest.mark.parametrize("native", [False, True])
def test_bf16_on_a_cpu_without_bf16_instructions_is_a_warning_naming_the_key(cli, write_suite, tmp_path, monkeypatch, native):
    import harness.launch.runner

    monkeypatch.setattr(harness.launch.runner, "cpu_bf16_native", lambda: native)
    suite = write_suite("name: w\ndefaults: {precision: bf16}\n")
    code, out, err = cli("run", suite, "--out", tmp_path / "out", "--no-progress", *tiny_sets(epochs=1))
    assert code == 0, err
    warned = "bf16 on a CPU without bf16 instructions" in err
    assert warned is not native
    if warned:
        assert "suite.yaml:2: defaults.precision" in err
    record = json.loads((tmp_path / "out" / "results.jsonl").read_text())
    assert record["config"]["precision"] == "bf16" and isinstance(record["env"]["cpu_bf16"], bool)
