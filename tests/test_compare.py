"""`harness compare BASE NEW`: runs matched by configuration, thresholds, exit codes."""

import pytest

from records import record, write_results


def errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error: ")]


@pytest.fixture
def dirs(tmp_path):
    """BASE and NEW results directories written from record lists."""

    def make(base, new):
        return write_results(tmp_path / "base", base), write_results(tmp_path / "new", new)

    return make


def base_runs():
    return [record("aaa", max_len=64, seconds=2.0, mcc=0.30), record("bbb", max_len=128, seconds=4.0, mcc=0.32)]


def test_a_run_slower_beyond_the_threshold_exits_1_and_is_named(cli, dirs):
    base, new = dirs(base_runs(), [record("aaa", max_len=64, seconds=2.1, mcc=0.30),
                                   record("bbb", max_len=128, seconds=5.0, mcc=0.32)])
    code, out, err = cli("compare", base, new, "--max-slowdown", "10%")
    assert code == 1
    [line] = errors(err)
    assert "bbb (max_len=128)" in line and "+25% epoch time (limit +10%)" in line
    assert "aaa" not in err
    assert "1.25x (+25%)" in out and "1.05x (+5%)" in out


def test_within_the_thresholds_exits_0(cli, dirs):
    base, new = dirs(base_runs(), [record("aaa", max_len=64, seconds=2.1, mcc=0.29),
                                   record("bbb", max_len=128, seconds=3.0, mcc=0.33)])
    code, out, err = cli("compare", base, new, "--max-slowdown", "10%", "--max-metric-drop", "0.02")
    assert code == 0, err
    assert not errors(err)
    assert "2 matched runs within the thresholds" in err
    assert "0.75x (-25%)" in out and "-0.010" in out and "+0.010" in out


def test_a_metric_drop_beyond_the_threshold_exits_1(cli, dirs):
    base, new = dirs(base_runs(), [record("aaa", max_len=64, seconds=2.0, mcc=0.25), base_runs()[1]])
    code, _, err = cli("compare", base, new, "--max-metric-drop", "0.02")
    assert code == 1
    [line] = errors(err)
    assert "aaa (max_len=64)" in line and "mcc -0.050 (limit -0.02)" in line


def test_a_run_that_failed_in_new_is_a_regression(cli, dirs):
    base, new = dirs(base_runs(), [base_runs()[0], record("bbb", max_len=128, status="failed")])
    code, out, err = cli("compare", base, new)
    assert code == 1
    [line] = errors(err)
    assert "bbb" in line and "failed in NEW (RuntimeError: boom)" in line


def test_runs_on_one_side_only_are_listed_not_ignored(cli, dirs):
    base, new = dirs(base_runs(), [base_runs()[0], record("ccc", max_len=256, seconds=8.0)])
    code, out, err = cli("compare", base, new, "--max-slowdown", "10%")
    assert code == 0, err
    assert "only in BASE" in out and "only in NEW" in out
    assert "2 runs on one side only: bbb (max_len=128) only in BASE; ccc (max_len=256) only in NEW" in err


def test_environment_differences_are_pointed_out(cli, dirs):
    new = [dict(r, env=dict(r["env"], device_name="NVIDIA A100-SXM4-40GB")) for r in base_runs()]
    code, _, err = cli("compare", *dirs(base_runs(), new))
    assert code == 0
    assert "note: device_name differs: BASE NVIDIA H100 80GB HBM3, NEW NVIDIA A100-SXM4-40GB" in err


def test_markdown_output(cli, dirs):
    code, out, _ = cli("compare", *dirs(base_runs(), base_runs()), "--format", "md")
    assert code == 0
    assert out.splitlines()[0].startswith("| run_id | max_len | base epoch s | new epoch s | new/base | base mcc |")
    assert "| aaa | 64 | 2.00 | 2.00 | 1.00x (+0%) | 0.300 | 0.300 | +0.000 | ok |" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--max-slowdown", "abc"], "--max-slowdown abc: expected a percentage such as 10%"),
        (["--max-slowdown", "10"], "--max-slowdown 10: ambiguous; write 10% for a percentage"),
        (["--max-slowdown=-5%"], "--max-slowdown -5%: expected a percentage >= 0"),
        (["--max-metric-drop", "lots"], "--max-metric-drop lots: expected a number in the metric's units"),
        (["--metric", "f1"], "--metric f1: no run reports it; metrics recorded: accuracy, mcc"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(cli, dirs, args, message):
    code, out, err = cli("compare", *dirs(base_runs(), base_runs()), *args)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err


def test_a_directory_without_results_exits_2(cli, dirs, tmp_path):
    base, _ = dirs(base_runs(), base_runs())
    (tmp_path / "empty").mkdir()
    code, _, err = cli("compare", base, tmp_path / "empty")
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "empty: no results.jsonl in it" in err


def test_nothing_in_common_exits_2(cli, dirs):
    code, _, err = cli("compare", *dirs(base_runs(), [record("zzz", max_len=32)]))
    assert code == 2
    assert "nothing to compare: no run in NEW has the configuration of a run in BASE" in err


def test_fractions_and_percentages_parse_alike():
    from harness.compare import parse_drop, parse_slowdown

    assert parse_slowdown("10%") == pytest.approx(0.1) == parse_slowdown("0.1")
    assert parse_slowdown("150%") == pytest.approx(1.5)
    assert parse_drop("0.02") == 0.02
