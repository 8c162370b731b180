"""`harness compare BASE NEW`: runs matched by configuration, thresholds, exit codes."""

import pytest

from records import record, with_fields, write_results


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
    from harness.records.compare import parse_drop, parse_slowdown

    assert parse_slowdown("10%") == pytest.approx(0.1) == parse_slowdown("0.1")
    assert parse_slowdown("150%") == pytest.approx(1.5)
    assert parse_drop("0.02") == 0.02


# ------------------------------------------------------------- several seeds per side

BASE_SECONDS = [10.0, 10.3, 9.8]


def seeded(seconds, mccs, max_len=64):
    """One configuration over seeds 1, 2, 3 (one run id per seed, the same on both sides)."""
    return [record(f"s{seed}-{max_len}", max_len=max_len, seed=seed, seconds=s, mcc=m)
            for seed, s, m in zip((1, 2, 3), seconds, mccs)]


def md_row(out, header_start="| run_id"):
    lines = [line for line in out.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert lines[0].startswith(header_start)
    return [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]


def t_cell(values, digits):
    """``mean ± half-width (n=3)`` of the 95% Student's t interval, computed here with scipy."""
    from statistics import fmean, stdev

    from scipy import stats

    half = stats.t.ppf(0.975, len(values) - 1) * stdev(values) / len(values) ** 0.5
    return f"{fmean(values):.{digits}f} ± {half:.{digits}f} (n={len(values)})"


def welch(a, b):
    from scipy import stats

    return stats.ttest_ind(a, b, equal_var=False).pvalue


def p_text(p):
    """As the report writes a p-value: three decimals, or two significant digits below 0.001."""
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def test_an_injected_30_percent_slowdown_over_three_seeds_is_a_significant_regression(cli, dirs):
    new_seconds = [s * 1.3 + noise for s, noise in zip(BASE_SECONDS, (0.1, -0.15, 0.05))]
    base_mcc, new_mcc = [0.30, 0.32, 0.29], [0.31, 0.30, 0.30]
    base, new = dirs(seeded(BASE_SECONDS, base_mcc), seeded(new_seconds, new_mcc))
    code, out, err = cli("compare", base, new, "--max-slowdown", "10%", "--max-metric-drop", "0.02", "--format", "md")
    assert code == 1
    [row] = md_row(out)
    # n, the means and their 95% intervals, and Welch's p, for the configuration
    assert row["base epoch s"] == t_cell(BASE_SECONDS, 2) and row["new epoch s"] == t_cell(new_seconds, 2)
    assert row["base mcc"] == t_cell(base_mcc, 3) and row["new mcc"] == t_cell(new_mcc, 3)
    p_time = welch(BASE_SECONDS, new_seconds)
    assert p_time < 0.05 and row["p time"] == f"{p_text(p_time)} (Welch)"
    assert row["p mcc"] == f"{p_text(welch(base_mcc, new_mcc))} (Welch)"
    assert "seed" not in row  # the seeds are grouped, not columns
    slower = (sum(new_seconds) / sum(BASE_SECONDS) - 1) * 100
    expected = f"slower by {slower:.1f}% (limit 10%), Welch p={p_text(p_time)}: a regression"
    assert row["verdict"] == expected
    [line] = errors(err)
    assert "s1-64, s2-64, s3-64" in line and expected in line
    assert "single run" not in err  # both sides have three runs: the noise was judged


def test_two_sides_drawn_from_the_same_distribution_are_not_a_regression(cli, dirs):
    new_seconds, new_mcc = [10.2, 9.9, 10.3], [0.31, 0.28, 0.30]
    base, new = dirs(seeded(BASE_SECONDS, [0.30, 0.32, 0.29]), seeded(new_seconds, new_mcc))
    # even with no allowance at all, a 1% difference within the seeds' noise is no regression
    code, out, err = cli("compare", base, new, "--max-slowdown", "0%", "--max-metric-drop", "0", "--format", "md")
    assert code == 0, err
    assert not errors(err)
    [row] = md_row(out)
    p_time = welch(BASE_SECONDS, new_seconds)
    assert p_time > 0.05
    within = f"slower by {(sum(new_seconds) / sum(BASE_SECONDS) - 1) * 100:.1f}% (limit 0%) but Welch p={p_time:.3f}: within the noise"
    assert within in row["verdict"] and within in err
    assert "mcc lower by 0.007 (limit 0)" in row["verdict"]
    assert row["p time"] == f"{p_time:.3f} (Welch)" and row["base epoch s"] == t_cell(BASE_SECONDS, 2)
    assert "1 matched configuration within the thresholds" in err


def test_alpha_sets_the_significance_level(cli, dirs):
    new_seconds = [10.2, 13.0, 10.9]  # +14%, noisy: p about 0.2
    base, new = dirs(seeded(BASE_SECONDS, [0.3] * 3), seeded(new_seconds, [0.3] * 3))
    p = welch(BASE_SECONDS, new_seconds)
    assert 0.05 < p < 0.5
    code, _, err = cli("compare", base, new, "--max-slowdown", "10%")
    assert code == 0 and "within the noise" in err
    code, _, err = cli("compare", base, new, "--max-slowdown", "10%", "--alpha", "0.5")
    assert code == 1 and f"p={p:.3f}: a regression" in errors(err)[0]


def test_one_run_per_side_says_once_that_it_cannot_judge_noise(cli, dirs):
    base, new = dirs(base_runs(), [record("aaa", max_len=64, seconds=2.21, mcc=0.30),
                                   record("bbb", max_len=128, seconds=4.0, mcc=0.32)])
    code, out, err = cli("compare", base, new, "--max-slowdown", "10%")
    assert code == 1
    [line] = errors(err)
    assert "+10% epoch time (limit +10%): slower by 10.5%" in line  # the real change, one decimal
    notes = [n for n in err.splitlines() if "one run cannot tell a change from noise" in n]
    assert len(notes) == 1 and "2 of 2 matched configurations have a single run" in notes[0]
    assert "p time" not in out  # no test, no p column


def test_busy_runs_are_named_in_a_note(cli, dirs):
    new = [with_fields(base_runs()[0], busy=True, load={"loadavg_1m": 3.5}), base_runs()[1]]
    code, out, err = cli("compare", *dirs(base_runs(), new))
    assert code == 0, err
    assert ("note: busy runs (measured while other processes took the CPU; their times are not comparable): "
            "NEW aaa") in err
    assert "busy runs: times not comparable" in out


@pytest.mark.parametrize("alpha", ["0", "1", "abc", "-0.1"])
def test_a_bad_alpha_exits_2_with_one_line(cli, dirs, alpha):
    code, _, err = cli("compare", *dirs(base_runs(), base_runs()), f"--alpha={alpha}")
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "expected a significance level between 0 and 1" in err
