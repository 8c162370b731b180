"""`harness report`: the table as rich/markdown/csv from results.jsonl alone, and the plot."""

import csv
import io

import pytest

from harness.render import plot
from harness.errors import HarnessError
from records import record, sweep, with_fields, write_results


def one_red_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    return lines[0]


def test_markdown_has_one_row_per_configuration_with_mean_and_spread(cli, tmp_path):
    results = write_results(tmp_path / "r", sweep())
    code, out, err = cli("report", results, "--format", "md")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0] == "**synthetic (18 runs)**"
    header = [c.strip() for c in lines[2].strip("|").split("|")]
    assert header[:3] == ["strategy", "max_len", "runs"] and "epoch s" in header and "mcc" in header
    assert lines[3].startswith("|---|---|---|") and "---:" in lines[3]
    body = lines[4:]
    assert len(body) == 6  # 2 strategies x 3 MAX_LEN, seeds folded
    fixed_128 = next(row for row in body if row.startswith("| fixed | 128 |"))
    cells = [c.strip() for c in fixed_128.strip("|").split("|")]
    assert cells[header.index("runs")] == "3"
    # 128/16 + 0.1 x (1, 2, 3): mean ± the 95% t interval's half-width, t(0.975, 2) x 0.10 / sqrt(3)
    assert cells[header.index("epoch s")] == "8.20 ± 0.25 (n=3)"
    assert cells[header.index("mcc")] == "0.220 ± 0.025 (n=3)"


def test_csv_holds_plain_numbers_and_output_goes_to_a_file(cli, tmp_path):
    results = write_results(tmp_path / "r", sweep())
    target = tmp_path / "table.csv"
    code, out, err = cli("report", results, "--format", "csv", "--output", target)
    assert code == 0, err
    assert out == "" and str(target) in err
    rows = list(csv.DictReader(io.StringIO(target.read_text())))
    assert len(rows) == 6
    row = next(r for r in rows if r["strategy"] == "fixed" and r["max_len"] == "64")
    assert float(row["epoch_seconds"]) == pytest.approx(4.2)
    assert float(row["epoch_seconds_spread"]) == pytest.approx(0.1)
    assert float(row["mcc"]) == pytest.approx(0.22)
    assert int(row["peak_memory_bytes"]) == 10**9 and row["runs"] == "3"


def test_a_failed_run_shows_its_reason(cli, tmp_path):
    results = write_results(tmp_path / "r", [record("a", max_len=32), record("b", max_len=64, status="failed")])
    code, out, err = cli("report", results, "--format", "md")
    assert code == 0, err
    assert "failed: RuntimeError: boom" in out


def test_plot_file_is_a_png_with_both_panels(cli, tmp_path):
    results = write_results(tmp_path / "r", sweep())
    target = tmp_path / "plot.png"
    code, out, err = cli("report", results, "--plot", target)
    assert code == 0, err
    assert target.read_bytes().startswith(b"\x89PNG")
    assert "synthetic (18 runs)" in out  # the table is printed too


def test_plot_axes_lines_and_legend():
    fig = plot.figure(sweep(), title="synthetic")
    time_ax, metric_ax = fig.axes
    assert time_ax.get_xlabel().startswith("MAX_LEN") and metric_ax.get_xlabel().startswith("MAX_LEN")
    assert "epoch" in time_ax.get_ylabel() and "(s)" in time_ax.get_ylabel()
    assert "MCC" in metric_ax.get_ylabel()
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["fixed", "dynamic"]
    assert legend.get_title().get_text() == "strategy"
    assert "synthetic" in fig._suptitle.get_text() and "3 seeds" in fig._suptitle.get_text()
    assert list(time_ax.get_xticks()) == [32, 64, 128]


def test_plot_data_means_per_line_and_x():
    data = plot.plot_data(sweep())
    assert data.x == "max_len" and data.groups == ["strategy.name"] and data.seeds == 3
    fixed = next(line for line in data.lines if line.label == "fixed")
    assert sorted(fixed.times) == [32, 64, 128]
    assert fixed.times[128] == pytest.approx([8.1, 8.2, 8.3])
    assert fixed.scores[64] == pytest.approx([0.21, 0.22, 0.23])


def test_x_and_group_can_be_chosen():
    records = [record(f"{b}-{n}", max_len=n, batch_size=b, seconds=n * b / 1000) for b in (16, 32) for n in (64, 128)]
    assert plot.sweep_key(records) == "max_len"  # MAX_LEN first when several numeric keys vary
    data = plot.plot_data(records, x="batch_size")
    assert data.x == "batch_size" and data.groups == ["max_len"]
    assert sorted(line.label for line in data.lines) == ["128", "64"]
    mixed = sweep(strategies=("fixed", "dynamic"), seeds=(1,)) + [
        record("mlp", strategy="fixed", max_len=64, head={"name": "mlp", "options": {}})
    ]
    data = plot.plot_data(mixed, group=["strategy"])
    assert data.groups == ["strategy.name"] and data.averaged == ["head.name"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"x": "nope"}, "--x nope: not a config key of these runs; keys that vary: strategy, max_len"),
        ({"x": "strategy"}, "--x strategy: strategy is not a number in every run"),
        ({"x": "batch_size"}, "--x batch_size: batch_size does not vary"),
        ({"group": ["max_len"]}, "--group max_len: it is the x axis already"),
        ({"group": ["model"]}, "--group model: model does not vary"),
    ],
)
def test_bad_plot_keys_are_named(kwargs, message):
    with pytest.raises(HarnessError) as exc:
        plot.plot_data(sweep(seeds=(1,)), **kwargs)
    assert message in str(exc.value)


def test_nothing_numeric_swept_means_no_plot(cli, tmp_path):
    records = [record("a", strategy="fixed"), record("b", strategy="dynamic")]
    assert plot.sweep_key(records) is None
    code, _, err = cli("report", write_results(tmp_path / "r", records), "--plot", tmp_path / "p.png")
    assert code == 2
    assert "no numeric config key varies across these runs (varied: strategy)" in one_red_line(err)


@pytest.mark.parametrize(
    "args, message",
    [
        (["{tmp}/missing"], "missing: no such results directory or file"),
        (["{tmp}"], "no results.jsonl in it"),
        (["{tmp}/r", "--x", "max_len"], "--x and --group shape the plot; add --plot"),
        (["{tmp}/r", "--output", "{tmp}/t.md"], "--output writes md, csv or json"),
        (["{tmp}/r", "--format", "md", "--output", "{tmp}/no/such/dir/t.md"], "cannot write it"),
        (["{tmp}/bad"], "bad/results.jsonl:2: not a JSON record"),
    ],
)
def test_report_mistakes_exit_2_with_one_line(cli, tmp_path, args, message):
    write_results(tmp_path / "r", sweep(seeds=(1,)))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.jsonl").write_text('{"run_id": "a"}\n{"run_id": \n')
    code, _, err = cli("report", *(a.format(tmp=tmp_path) for a in args))
    assert code == 2
    assert message in one_red_line(err)


def test_a_numeric_option_of_only_some_runs_is_no_axis():
    """IMDB's holdout_size exists in IMDB runs only: no line can be drawn along it."""
    records = [record("c", dataset={"name": "cola", "options": {}}),
               record("i", dataset={"name": "imdb", "options": {"holdout_size": 500}})]
    assert plot.sweep_key(records) is None
    with pytest.raises(HarnessError, match="--x holdout_size: holdout_size is not a number in every run"):
        plot.plot_data(records, x="holdout_size")


# ------------------------------------------------------ intervals, busy runs, one run


def t_half(values):
    from statistics import stdev

    from scipy import stats

    return stats.t.ppf(0.975, len(values) - 1) * stdev(values) / len(values) ** 0.5


def md_rows(out):
    lines = [line for line in out.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]


def test_over_seeds_a_cell_is_the_mean_the_95_percent_t_interval_and_n(cli, tmp_path):
    code, out, err = cli("report", write_results(tmp_path / "r", sweep()), "--format", "md")
    assert code == 0, err
    row = next(r for r in md_rows(out) if r["strategy"] == "fixed" and r["max_len"] == "128")
    assert row["epoch s"] == f"8.20 ± {t_half([8.1, 8.2, 8.3]):.2f} (n=3)" == "8.20 ± 0.25 (n=3)"
    assert row["mcc"] == f"0.220 ± {t_half([0.21, 0.22, 0.23]):.3f} (n=3)"


def test_the_rich_table_says_what_its_intervals_are(cli, tmp_path):
    records = sweep(lens=(64,)) + [with_fields(record("one", max_len=128, mcc=0.215),
                                               metrics_ci95={"mcc": [0.13, 0.30]})]
    code, out, err = cli("report", write_results(tmp_path / "r", records))
    assert code == 0, err
    text = " ".join(out.split())  # the legend under the table wraps at the table's width
    assert "a ± b (n=k): mean of k runs ± the half-width of its 95% confidence interval (Student's t, " \
           "k-1 degrees of freedom)" in text
    assert "a [lo, hi]: one run's metric with its 95% bootstrap interval over the evaluation set" in text


def test_a_single_runs_metric_shows_its_bootstrap_interval_and_csv_its_bounds(cli, tmp_path):
    records = [with_fields(record("a", max_len=32, mcc=0.215), metrics_ci95={"mcc": [0.1312, 0.2987]}),
               record("b", max_len=64, mcc=0.25)]  # an older record: no interval
    results = write_results(tmp_path / "r", records)
    code, out, err = cli("report", results, "--format", "md")
    assert code == 0, err
    a, b = md_rows(out)
    assert a["mcc"] == "0.215 [0.13, 0.30]" and b["mcc"] == "0.250"
    assert a["accuracy"] == "0.700"  # no interval recorded for it
    code, out, err = cli("report", results, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert float(rows[0]["mcc_ci_low"]) == pytest.approx(0.1312) and float(rows[0]["mcc_ci_high"]) == 0.2987
    assert rows[0]["mcc_ci"] == "bootstrap" and rows[0]["mcc_n"] == "1"
    assert rows[1]["mcc_ci_low"] == rows[1]["mcc_ci"] == "" and rows[1]["mcc"] == "0.25"


def test_csv_has_n_and_the_t_interval_of_each_figure(cli, tmp_path):
    code, out, err = cli("report", write_results(tmp_path / "r", sweep()), "--format", "csv")
    assert code == 0, err
    row = next(r for r in csv.DictReader(io.StringIO(out)) if r["strategy"] == "fixed" and r["max_len"] == "128")
    half = t_half([8.1, 8.2, 8.3])
    assert row["epoch_seconds_n"] == "3" and row["epoch_seconds_ci"] == "t"
    assert float(row["epoch_seconds_ci_low"]) == pytest.approx(8.2 - half)
    assert float(row["epoch_seconds_ci_high"]) == pytest.approx(8.2 + half)
    assert float(row["mcc_ci_high"]) == pytest.approx(0.22 + t_half([0.21, 0.22, 0.23]))
    assert row["busy"] == "0"


def test_busy_runs_are_flagged_in_every_format(cli, tmp_path):
    records = [with_fields(record("a", max_len=32), busy=True, load={"loadavg_1m": 3.2}), record("b", max_len=64)]
    results = write_results(tmp_path / "r", records)
    code, out, _ = cli("report", results, "--format", "md")
    assert [r["status"] for r in md_rows(out)] == ["ok (busy)", "ok"]
    code, out, _ = cli("report", results, "--format", "csv")
    assert [(r["status"], r["busy"]) for r in csv.DictReader(io.StringIO(out))] == [("ok", "1"), ("ok", "0")]
    code, out, _ = cli("report", results)
    assert "ok (busy)" in out and "busy: measured while other processes took the CPU" in out
    grouped = [with_fields(record("s1", seed=1), busy=True), record("s2", seed=2), record("s3", seed=3)]
    code, out, _ = cli("report", write_results(tmp_path / "g", grouped), "--format", "md")
    assert md_rows(out)[0]["status"] == "ok (1 of 3 busy)"


def test_a_one_configuration_table_still_shows_strategy_and_max_len(cli, tmp_path):
    for records in ([record("a", strategy="dynamic", max_len=96)],
                    [record(f"s{seed}", strategy="dynamic", max_len=96, seed=seed) for seed in (1, 2)]):
        code, out, err = cli("report", write_results(tmp_path / records[0]["run_id"], records), "--format", "md")
        assert code == 0, err
        [row] = md_rows(out)
        assert row["strategy"] == "dynamic" and row["max_len"] == "96"


def test_the_plots_error_bars_are_the_95_percent_t_interval():
    fig = plot.figure(sweep(), title="synthetic")
    time_ax = fig.axes[0]
    fixed = time_ax.containers[0]  # the first line drawn: fixed
    assert fixed.get_label() == "fixed"
    bars = fixed.lines[2][0].get_segments()  # one segment per x: (x, low), (x, high)
    (_, low), (_, high) = bars[-1]  # MAX_LEN 128: 8.1, 8.2, 8.3 s
    assert (low, high) == pytest.approx((8.2 - t_half([8.1, 8.2, 8.3]), 8.2 + t_half([8.1, 8.2, 8.3])))
    assert "95% t interval over 3 seeds" in fig._suptitle.get_text()
