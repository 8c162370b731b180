"""The command line: ``harness run | validate | plugins | analyze | estimate | calibrate | report | compare``.

User mistakes raise :class:`HarnessError`; they are caught once, here, printed as one red
line without a traceback, and exit with code 2 (``HARNESS_TRACEBACK=1`` adds the traceback
of a plugin's own error under it). A suite in which a run failed or diverged exits 1.
Ctrl-C or SIGTERM exits 130 after saying how to resume.

Each command imports what it needs when it runs (``harness --help`` stays fast, and
``harness report`` and ``harness compare``, which read records alone, never import torch);
those imports are the function-level ones below.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shlex
import sys
from pathlib import Path
from typing import Sequence

from harness import __version__
from harness.errors import TRACEBACK_ENV, ExitCode, HarnessError, NoRoom, no_room
from harness.render.console import print_error, print_note, print_text

DEFAULT_OUT_ROOT = "results"


def _add_suite_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("suite", help="the suite file (YAML)")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config key for every run (dotted keys, YAML values): --set max_len=64; repeatable",
    )
    p.add_argument(
        "--nproc", type=_positive_int, metavar="N",
        help="data-parallel processes per run (one per GPU) through torchrun; same as --set launcher.nproc=N",
    )
    p.add_argument(
        "--plugin", dest="plugins", action="append", default=[], metavar="MODULE_OR_PATH",
        help="load a local plugin module (a module name or a .py file); repeatable",
    )
    p.add_argument(
        "--export", dest="exports", action="append", default=[], metavar="NAME",
        help="send each stored record to this exporter (tensorboard, mlflow), besides the suite's `export:`; "
        "repeatable",
    )


def _add_estimate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--calibration", metavar="FILE",
                   help="price the runs with this calibration file (harness calibrate), which may come from another "
                        "machine: its prices are then predicted; default: this machine's, in the harness cache")
    p.add_argument("--no-probe", action="store_true",
                   help="refuse, in one line, a run that no calibration covers instead of probing its configuration")
    p.add_argument("--memory-limit", metavar="SIZE",
                   help="the memory a run may use (e.g. 16GiB, 800MB): a run predicted to need more does not fit; "
                        "default: the device's (a GPU's memory, the RAM or cgroup limit of a CPU machine)")


def parse_size(text: str, option: str = "--memory-limit") -> int:
    """Bytes from ``800MB``, ``16GiB``, ``2e9``: decimal (kB, MB, GB) and binary (KiB, MiB, GiB) units."""
    import re

    units = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
             "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-z]*)\s*", text.lower())
    if not match or match.group(2) not in units or float(match.group(1)) <= 0:
        raise HarnessError(f"{option} {text}: expected a size such as 16GiB, 800MB or a number of bytes")
    return int(float(match.group(1)) * units[match.group(2)])


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


# long: every command's options in one place, read top to bottom as `harness --help` shows them
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harness",
        description="Benchmark BERT-family fine-tuning on sequence classification.",
    )
    parser.add_argument("--version", action="version", version=f"harness {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run a suite: progress, a table, results.jsonl")
    _add_suite_args(run)
    run.add_argument("--out", help=f"output directory (default: {DEFAULT_OUT_ROOT}/<suite name>)")
    run.add_argument("--rerun", action="store_true", help="run again the runs already recorded in --out")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument("--no-plot", action="store_true", help="do not write <out>/plot.png")
    run.add_argument("--html", metavar="FILE", help="also write one self-contained HTML page of the results (docs/report.md)")
    run.add_argument("--epochs", action="store_true",
                     help="after the table, each run epoch by epoch: loss and validation metrics (and the test split's)")
    run.add_argument(
        "--isolation", choices=("process", "none"), default="process",
        help="process (default): each run in a fresh process of its own, so its memory and state are its own "
        "and a crash fails only that run; none: in this process, for a debugger or a profiler",
    )
    run.add_argument(
        "--jobs", type=_positive_int, default=1, metavar="N",
        help="runs at once on this machine, each in its own process with its own share: on a CPU cores // N "
        "cores (pinned) and as many threads, on GPUs one run per GPU (--nproc GPUs per run). Runs beside each "
        "other slow each other down; each record says how many ran beside it (docs/sweeps.md)",
    )
    run.add_argument(
        "--executor", choices=("slurm", "local"),
        help="submit each run as a job through submitit: slurm, to a SLURM cluster (the suite's `slurm:` "
        "section and --slurm set the jobs); local, submitit's local executor on this machine. Default: "
        "`harness run` starts the runs itself (--jobs at once)",
    )
    run.add_argument(
        "--slurm", action="append", default=[], metavar="KEY=VALUE",
        help="a job setting over the suite's `slurm:` section: partition, time, gpus_per_run, cpus_per_run, "
        "mem_gb, array_parallelism, account, qos, constraint, setup, additional; repeatable",
    )
    run.add_argument(
        "--no-wait", action="store_true",
        help="with --executor slurm: submit and return; each job stores its record when it ends, and the "
        "same command again shows the table and reruns what failed",
    )
    run.add_argument("--estimate", action="store_true",
                     help="predict every run's epoch time and peak memory first (harness estimate), store each "
                          "prediction in its record, show it beside the measured time; a run predicted not to fit "
                          "the memory stops the suite before it starts")
    _add_estimate_args(run)

    validate = sub.add_parser("validate", help="check a suite and print its expanded runs; runs nothing")
    _add_suite_args(validate)
    _add_json_format(validate)

    plugins = sub.add_parser("plugins", help="list datasets, tokenizer strategies and heads, with their options")
    plugins.add_argument("--plugin", dest="plugins", action="append", default=[], metavar="MODULE_OR_PATH")
    _add_json_format(plugins)

    analyze = sub.add_parser("analyze", help="token-length profile of a dataset: percentiles, histogram, MAX_LEN cost")
    analyze.add_argument("dataset", help="dataset name (see `harness plugins`)")
    analyze.add_argument("--model", default="minilm", help="whose tokenizer (default: minilm, the embedded model)")
    analyze.add_argument("--split", default="train", help="which split (default: train)")
    analyze.add_argument("--max-len", default=None, metavar="N,N,...", help="MAX_LENs to cost (default: 32,64,128,256,512)")
    analyze.add_argument("--batch-size", type=int, default=32, help="batch size the strategies batch with (default 32)")
    analyze.add_argument("--strategy", dest="strategies", action="append", default=[], metavar="NAME",
                         help="cost only this tokenizer strategy (repeatable; default: every registered one)")
    analyze.add_argument("--subset", type=int, default=None, metavar="N", help="a seeded, stratified subset of N examples")
    analyze.add_argument("--seed", type=int, default=0, help="seed of the subset and of the random batches")
    analyze.add_argument("--option", dest="options", action="append", default=[], metavar="KEY=VALUE",
                         help="a dataset option (YAML value): --option train=my.csv; repeatable")
    analyze.add_argument("--data-dir", default=None, help="data directory (default: $HARNESS_DATA_DIR, then the cache)")
    analyze.add_argument("--plugin", dest="plugins", action="append", default=[], metavar="MODULE_OR_PATH")
    _add_json_format(analyze)

    est = sub.add_parser("estimate", help="predict every run's epoch time, run time, memory (and cost) without "
                                          "training: from a calibration of this machine, probed when none fits")
    _add_suite_args(est)
    _add_estimate_args(est)
    est.add_argument("--price", metavar="PER_HOUR", help="the machine's price per hour: adds the cost per epoch, run "
                                                         "and suite")
    est.add_argument("--format", choices=("table", "md", "csv", "json"), default="table")
    est.add_argument("--output", metavar="FILE", help="write the md/csv/json text to FILE instead of stdout")
    est.add_argument("--plot", metavar="PNG", nargs="?", const="estimate.png",
                     help="draw the predicted epoch time against MAX_LEN (default file: estimate.png)")

    cal = sub.add_parser("calibrate", help="measure the price of batch shapes on this machine for a suite's "
                                           "configurations (a short probe), or fit it on a results directory's steps")
    _add_suite_args(cal)
    cal.add_argument("--calibration", metavar="FILE", help="the calibration file to add to (default: "
                                                           "calibrations.json in the harness cache)")
    cal.add_argument("--from", dest="from_dir", metavar="DIR",
                     help="fit on the steps files of the finished runs in this results directory instead of probing")

    rep = sub.add_parser("report", help="re-render the table (and a plot) from a results directory")
    rep.add_argument("dir", help="a results directory (or its results.jsonl)")
    rep.add_argument("--epochs", action="store_true",
                     help="each run epoch by epoch (loss, the validation metrics after each, the test split's once) "
                     "instead of one row per configuration")
    rep.add_argument("--format", choices=("table", "md", "csv", "json"), default="table",
                     help="table (default), md: markdown for a README or a PR, csv: plain numbers, json: one "
                          "document (docs/schemas/report.schema.json)")
    rep.add_argument("--html", metavar="FILE", help="also write one self-contained HTML page: the sortable table, the plots, each run's curves, the environment, the failures (docs/report.md)")
    rep.add_argument("--output", metavar="FILE", help="write the md/csv/json text to FILE instead of stdout")
    rep.add_argument("--plot", metavar="PNG", nargs="?", const="",
                     help="also draw epoch time and the main metric against a swept key (with --x time: the score "
                          "against epoch time, the Pareto front marked); default file: plot.png (tradeoff.png) in "
                          "the results directory")
    rep.add_argument("--x", metavar="KEY", help="the plot's x axis (default: max_len, or the swept numeric key); "
                                                "time: the score against epoch time, one point per configuration")
    rep.add_argument("--group", metavar="KEY", action="append",
                     help="one plot line per value of KEY (default: every other key that varies); repeatable")
    rep.add_argument("--vs", metavar="KEY=VALUE",
                     help="each configuration's paired difference (main metric, accuracy) from the one with "
                          "KEY=VALUE and otherwise the same, on the same examples, with a verdict at --alpha: "
                          "--vs strategy=fixed")
    rep.add_argument("--alpha", default="0.05", metavar="P", help="--vs: the significance level (default 0.05)")

    cmp = sub.add_parser("compare", help="compare two results directories configuration by configuration "
                                         "(seeds grouped); exit 1 on a regression")
    cmp.add_argument("base", help="the baseline results directory")
    cmp.add_argument("new", help="the results directory to check")
    cmp.add_argument("--max-slowdown", metavar="PCT", help="fail when a run's epoch time grows by more, e.g. 10%%")
    cmp.add_argument("--max-metric-drop", metavar="X", help="fail when a run's metric drops by more, e.g. 0.02")
    cmp.add_argument("--metric", help="the metric to compare (default: each dataset's main metric)")
    cmp.add_argument("--alpha", default="0.05", metavar="P",
                     help="significance level of the tests (Welch's with several seeds a side; the paired test of "
                          "the metric and the step-level test of time where the runs kept their side files; "
                          "default 0.05): a change past a threshold is a regression only when p < alpha")
    cmp.add_argument("--format", choices=("table", "md", "csv", "json"), default="table",
                     help="json: one document with the environment's differences, the verdicts and the exit code "
                          "(docs/schemas/compare.schema.json)")
    cmp.add_argument("--html", metavar="FILE", help="also write the comparison as one self-contained HTML page (docs/report.md)")
    return parser


def _add_json_format(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=("table", "json"), default="table",
                   help="json: one JSON document on stdout instead of the table (docs/results.md#json-output)")


def _load(args: argparse.Namespace):
    """The suite, its resolved runs, and the plugin manager (the exporters switched on in it)."""
    from harness.config.resolve import resolve  # lazy: it imports torch (devices) and the plugins
    from harness.config.suite import load_suite, parse_set
    from harness.records.export import switch_on  # lazy: it imports the plugin bases (torch)
    from harness.registry import load_registry  # lazy: it imports the plugins (torch)

    suite = load_suite(args.suite)
    overrides = parse_set(args.overrides)
    if args.nproc is not None:
        overrides["launcher.nproc"] = args.nproc
    # suite-named modules are relative to the suite file, --plugin ones to the working directory
    local = _local_plugins(args, suite)
    registry = load_registry(local, base_dir=suite.path.parent)
    switch_on(registry.pm, suite, args.exports)
    return suite, resolve(suite, registry, overrides), registry.pm


def _local_plugins(args: argparse.Namespace, suite) -> list[str]:
    """The suite's plugin modules (relative to the suite file) and --plugin ones (to the working directory)."""
    return [*suite.plugins, *(str(Path(p).resolve()) if p.endswith(".py") else p for p in args.plugins)]


def cmd_validate(args: argparse.Namespace) -> int:
    from harness.launch.slurm import settings  # lazy: it imports the launcher (torch)
    from harness.render.listings import print_runs  # lazy: it imports the plugin bases (torch)

    suite, runs, _ = _load(args)
    if suite.slurm:
        settings(suite.slurm, suite.where, {})
    configs = [r.record_config() | {"run_id": r.run_id} for r in runs]
    if args.format == "json":
        from harness.render.documents import print_document, validate_document

        print_document(validate_document(suite.name, suite.description, configs))
    else:
        print_runs(suite.name, configs, suite.description)
    return ExitCode.OK


def cmd_run(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as owned:  # the --out directory's ownership, released when the command ends
        return _run(args, owned)


def _run(args: argparse.Namespace, owned: contextlib.ExitStack) -> int:
    from harness.launch.runner import preflight, run_suite  # lazy: the loop and torch
    from harness.records.export import notifier  # lazy: it imports the plugin bases (torch)
    from harness.records.store import ResultsStore, check_out_dir, claim, prepare_out_dir, repair
    from harness.render.progress import RichProgress

    suite, runs, pm = _load(args)
    cluster = _cluster(args, suite, runs)
    # nothing is written before every run has been checked: a failed start leaves no folder
    out = check_out_dir(args.out or Path(DEFAULT_OUT_ROOT) / suite.name)
    if args.html:
        from harness.render.html import check_html_path  # lazy: the HTML page's module, where one is asked

        check_html_path(args.html)
    claim(out, probe=True)  # another harness run writes there: said at once, before the checks
    if cluster is None:  # the runs train here: not beside the jobs of a submission still writing there
        from harness.launch.slurm import refuse_beside_jobs

        refuse_beside_jobs(out)
    warnings, busy = preflight(runs, here=cluster is None or cluster.kind == "local")
    for warning in warnings:
        print_note(warning)
    predictions = _predictions(args, runs, cluster)
    prepare_out_dir(out)
    owned.enter_context(claim(out))  # until this command ends or dies: a second one into --out is refused
    repaired = repair(out)  # lines of the store that are no record (a crash mid-write) set aside, said
    if repaired:
        print_note(repaired)
    _record_environment(args, out, suite, runs)
    done = 0 if args.rerun else sum(ResultsStore(out).finished(r.run_id) for r in runs)
    if done:
        print_note(
            f"{done} of {len(runs)} run{'s' if len(runs) != 1 else ''} already done in {out}: skipped "
            "(--rerun runs them again)"
        )
    if busy:  # after the last check that can stop the command: a mistake stays one line
        print_note(busy)
    try:
        at_once = cluster.jobs if cluster else args.jobs
        with RichProgress(len(runs), enabled=not args.no_progress, jobs=at_once) as progress:
            records = run_suite(runs, out, rerun=args.rerun, progress=progress, suite_name=suite.name,
                                isolation=args.isolation, on_stored=notifier(pm), jobs=args.jobs, cluster=cluster,
                                predictions=predictions)
    except KeyboardInterrupt:
        print_note(interrupted_note(args, out))
        return ExitCode.INTERRUPTED
    if cluster is not None and not cluster.wait and cluster.in_flight:
        print_note(f"submitted; each job stores its record in {out / 'results.jsonl'} as it ends "
                   f"(`harness report {out}` shows them; the same command again reruns what failed)")
        return ExitCode.OK
    _show_results(args, records, out, suite.name)
    bad = [r for r in records if r.get("status") != "ok"]
    return ExitCode.RUN_FAILED if bad else ExitCode.OK


def _show_results(args: argparse.Namespace, records: list[dict], out: Path, name: str) -> None:
    """After the runs: the table (and ``--epochs``), where the results are, ``--html``'s page, the plot."""
    from harness.records.summary import table_title
    from harness.render.tables import print_epochs, print_table

    title = table_title(records, name)
    print_table(records, title=title)
    if args.epochs:
        print_epochs(records, title=name)
    print_note(f"results: {out / 'results.jsonl'}")
    if args.html:
        _write_html(args.html, lambda html: html.report_page(records, title, out))
    if not args.no_plot:
        _plot_after_run(records, out / "plot.png", name)


def _record_environment(args: argparse.Namespace, out: Path, suite, runs) -> None:
    """``<out>/environment.json``, written by the first ``harness run`` into ``out``; a later
    one whose environment differs says so in a line (the file is kept)."""
    from harness.records.environment import collect, write_once

    environment = collect(["harness", *getattr(args, "argv", sys.argv[1:])], suite.path,
                          [{"run_id": r.run_id, "config": r.record_config()} for r in runs])
    warning = write_once(out, environment)
    if warning:
        print_note(f"warning: {warning}")


def _predictions(args: argparse.Namespace, runs, cluster) -> dict | None:
    """``harness run --estimate``: each run's prediction, by run id, made before anything is
    written; a run predicted not to fit its memory stops the suite here, in one line."""
    if not args.estimate:
        for option, given in (("--calibration", args.calibration), ("--no-probe", args.no_probe),
                              ("--memory-limit", args.memory_limit)):
            if given:
                raise HarnessError(f"{option} goes with --estimate")
        return None
    if cluster is not None:
        raise HarnessError(f"--estimate predicts runs that `harness run` trains itself; with --executor "
                           f"{args.executor} run `harness estimate` on the machine the jobs run on")
    from harness.render.estimates import estimate_notes
    from harness.render.tables import _bytes

    result = _estimate(args, runs)
    too_big = next((e for e in result.runs if e.fits is False), None)
    if too_big is not None:  # before the notes: a refusal stays one line
        raise HarnessError(
            f"{too_big.run.where('batch_size')}: run {too_big.run.run_id} (max_len {too_big.run.config.max_len}, "
            f"batch {too_big.run.config.batch_size}) is predicted to need {_bytes(int(too_big.peak_memory[0]))} of "
            f"memory, more than the {_bytes(too_big.memory_limit)} it may use: a smaller batch_size or max_len, or "
            "another --memory-limit")
    for line in estimate_notes(result)[:-1]:  # the calibrations (the last, the suite's total, said here)
        print_note(line)
    plural = 's' if len(runs) != 1 else ''
    print_note(f"estimate: the suite's {len(runs)} run{plural} predicted to take {result.total_seconds / 60:.1f} min")
    return {e.run.run_id: e.prediction() for e in result.runs}


#: options of ``harness run`` a resume command leaves out: ``--rerun`` would train the
#: finished runs again, ``--out`` is given resolved
NOT_RESUMED = {"rerun", "out"}


def resume_command(args: argparse.Namespace, out: Path) -> list[str]:
    """The ``harness run`` command that resumes ``args``: its suite and every option given a
    value other than its default, as the parser defines them (so a new option needs no edit
    here), with ``--out`` resolved to where the results are."""
    run = _subparser(build_parser(), "run")
    command = ["harness", "run", str(args.suite), "--out", str(out)]
    for action in run._actions:
        if not action.option_strings or action.dest in NOT_RESUMED | {"help"}:
            continue
        value, flag = getattr(args, action.dest, action.default), action.option_strings[-1]
        if value == action.default or value is None:
            continue
        if isinstance(action, argparse._StoreTrueAction):
            command.append(flag)
        elif isinstance(action, argparse._AppendAction):
            command += [a for item in value for a in (flag, str(item))]
        else:
            command += [flag, str(value)]
    return command


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def interrupted_note(args: argparse.Namespace, out: Path) -> str:
    """What was kept, and the command that resumes (finished runs are skipped)."""
    from harness.records.store import RESULTS_FILE, read_records

    path = out / RESULTS_FILE
    kept = len(read_records(path)) if path.is_file() else 0
    if args.executor == "slurm":
        abandoned = "the jobs go on and store their records"
    else:
        abandoned = "the runs in progress were abandoned" if args.jobs > 1 else "the run in progress was abandoned"
    return (
        f"interrupted: {kept} finished run{'s' if kept != 1 else ''} kept in {path}; {abandoned}. "
        f"To resume: {shlex.join(resume_command(args, out))}"
    )


def _cluster(args: argparse.Namespace, suite, runs):
    """The scheduler the runs go to (``--executor``), or None: ``harness run`` runs them;
    the options that do not go together are refused here, before anything is written."""
    if args.jobs > 1 and args.isolation == "none":
        raise HarnessError("--jobs runs each run in a process of its own; --isolation none trains in this one, "
                           "one run at a time: drop one of them")
    multi = next((r for r in runs if r.config.launcher.nnodes > 1), None)
    if (args.jobs > 1 or args.executor) and multi is not None:
        raise HarnessError(f"{multi.where('launcher')}: a multi-node run (nnodes {multi.config.launcher.nnodes}) "
                           "needs every node to run the suite in the same order: drop --jobs and --executor")
    if args.executor is None:
        for option, given in (("--slurm", args.slurm), ("--no-wait", args.no_wait)):
            if given:
                raise HarnessError(f"{option} goes with --executor slurm (or local)")
        return None
    if args.jobs > 1:
        raise HarnessError(f"--jobs is for runs that `harness run` starts itself; with --executor {args.executor} "
                           "the scheduler runs the jobs (--slurm array_parallelism=N caps how many at once)")
    if args.isolation == "none":
        raise HarnessError(f"--isolation none trains in this process; --executor {args.executor} in jobs: drop one")
    if args.no_wait and args.executor == "local":
        raise HarnessError("--no-wait goes with --executor slurm: the local executor's jobs stop with `harness run`")
    from harness.config.suite import parse_set
    from harness.launch.slurm import Cluster, settings  # lazy: it imports the launcher (torch)
    from harness.launch.spec import ExportSpec

    slurm = settings(suite.slurm, suite.where, parse_set(args.slurm, "--slurm", "partition=gpu"))
    export = None
    if suite.export or args.exports:  # the jobs switch the same exporters on (harness.launch.slurm_job)
        export = ExportSpec(suite=str(suite.path.resolve()), plugins=_local_plugins(args, suite), names=args.exports)
    cluster = Cluster(args.executor, slurm, wait=not args.no_wait, export=export)
    cluster.check()
    return cluster


def _plot_after_run(records, path: Path, title: str) -> None:
    """A suite that sweeps a numeric key (MAX_LEN, ...) gets its plot; a plot that cannot
    be drawn is a note, never a failed suite."""
    from harness.render import plot  # lazy: matplotlib, where a plot is drawn

    if plot.sweep_key(records) is None:
        return
    try:
        plot.write_plot(records, path, title=title)
    except NoRoom:  # the disk is full: said as an error (every record is stored)
        raise
    except HarnessError as exc:
        print_note(f"no plot: {exc}")
        return
    print_note(f"plot: {path}")


def cmd_report(args: argparse.Namespace) -> int:
    from harness.records.store import read_records
    from harness.records.summary import suite_names, table_title
    from harness.records.versus import folder_of
    from harness.render import tables

    if (args.x or args.group) and args.plot is None:
        raise HarnessError("--x and --group shape the plot; add --plot FILE.png")
    if args.x == "time" and args.group:
        raise HarnessError("--group shapes the lines of a sweep plot; --x time draws one point per configuration")
    if args.output and args.format == "table":
        raise HarnessError("--output writes md, csv or json; add --format md, csv or json")
    records = read_records(args.dir)
    folder = folder_of(args.dir)
    title = table_title(records, folder.name)
    if args.vs is not None:
        return _report_vs(args, records, folder, title)
    if args.html:
        _write_html(args.html, lambda html: html.report_page(records, title, folder))
    if args.format == "table":
        (tables.print_epochs if args.epochs else tables.print_table)(records, title=title)
    elif args.format == "json":
        from harness.render import documents

        _emit_document(args, (documents.epochs_document if args.epochs else documents.report_document)(records, title))
    else:
        if args.epochs:
            header, cells = tables.epoch_cells(records)
            text = (tables.markdown(header, cells, header.index("epoch")) if args.format == "md"
                    else tables.csv_text(header, cells))
        else:
            text = tables.markdown_table(records, title) if args.format == "md" else tables.csv_table(records)
        if args.output:
            _write_text(Path(args.output), text)
            print_note(f"{args.format}: {args.output}")
        else:
            print_text(text)
    if args.plot is not None:
        from harness.render import plot, tradeoff  # lazy: matplotlib, where a plot is drawn

        name = suite_names(records, folder.name)
        if args.x == tradeoff.TIME:
            path = tradeoff.write_tradeoff(records, args.plot or folder / "tradeoff.png", title=name)
        else:
            path = plot.write_plot(records, args.plot or folder / "plot.png", x=args.x, group=args.group, title=name)
        print_note(f"plot: {path}")
    return ExitCode.OK


def _report_vs(args: argparse.Namespace, records: list, folder: Path, title: str) -> int:
    """``harness report DIR --vs KEY=VALUE``: the paired differences table, then its notes."""
    from harness.records.compare import parse_alpha
    from harness.records.versus import versus
    from harness.render import tables

    if args.epochs:
        raise HarnessError("--vs prints each configuration's paired differences; it does not combine with --epochs")
    if args.plot is not None and args.x != "time":
        raise HarnessError("--vs draws its paired intervals on the time plot: add --x time")
    vs = versus(records, folder, args.vs, parse_alpha(args.alpha))
    header, cells, styles, right_from = tables.vs_cells(vs)
    _emit(args, header, cells, styles, right_from, f"{title}: against {args.vs}")
    for line in tables.vs_notes(vs):
        print_note(line)
    if args.plot is not None:
        from harness.records.summary import TEST, suite_names, tradeoff_metric
        from harness.render import tradeoff  # lazy: matplotlib, where a plot is drawn

        metric = tradeoff_metric(records) or ""
        # the plot's score may be the test split's: its intervals come from that split's predictions
        shown = (versus(records, folder, args.vs, vs.alpha, split=tradeoff.plotted_split(records, metric))
                 if metric.startswith(TEST) else vs)
        path = tradeoff.write_tradeoff(records, args.plot or folder / "tradeoff.png",
                                       title=suite_names(records, folder.name), vs=shown)
        print_note(f"plot: {path}")
    return ExitCode.OK


def _emit(args: argparse.Namespace, header: list, cells: list, styles: list, right_from: int, title: str) -> None:
    """Text cells as ``--format`` asks: a rich table, markdown or csv (to ``--output`` when given)."""
    from harness.render import tables

    if args.format == "table":
        tables.print_cells(header, cells, styles, title=title, right_from=right_from)
        return
    if args.format == "json":
        from harness.render.documents import cells_document

        _emit_document(args, cells_document(args.command, title, header, cells))
        return
    text = tables.markdown(header, cells, right_from) if args.format == "md" else tables.csv_text(header, cells)
    if getattr(args, "output", None):
        _write_text(Path(args.output), text)
        print_note(f"{args.format}: {args.output}")
    else:
        print_text(text)


def _emit_document(args: argparse.Namespace, document: dict) -> None:
    """``--format json``: the document alone on stdout, or in ``--output``."""
    from harness.render.documents import dumps, print_document

    if getattr(args, "output", None):
        _write_text(Path(args.output), dumps(document))
        print_note(f"json: {args.output}")
    else:
        print_document(document)


def _write_html(path: str, page) -> None:
    """``--html FILE``: the page ``page(harness.render.html)`` makes, written whole or not at all."""
    from harness.render import html  # lazy: jinja2 and matplotlib, where a page is made

    html.check_html_path(path)  # before the page is made (its plots take seconds); write_html checks again
    print_note(f"html: {html.write_html(path, page(html))}")


def _write_text(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise HarnessError(f"--output {path}: cannot write it ({exc.strerror})") from None


def cmd_compare(args: argparse.Namespace) -> int:
    from harness.records import compare as cmp
    from harness.records.store import read_records
    from harness.records.versus import folder_of
    from harness.render import tables

    max_slowdown = cmp.parse_slowdown(args.max_slowdown) if args.max_slowdown is not None else None
    max_drop = cmp.parse_drop(args.max_metric_drop) if args.max_metric_drop is not None else None
    alpha = cmp.parse_alpha(args.alpha)
    base, new = read_records(args.base), read_records(args.new)
    for where, records in ((args.base, base), (args.new, new)):
        if not records:
            raise HarnessError(f"{where}: the results file holds no runs")
    comp = cmp.compare(base, new, max_slowdown=max_slowdown, max_metric_drop=max_drop, metric=args.metric,
                       alpha=alpha, folders=(folder_of(args.base), folder_of(args.new)))
    code, reason = cmp.outcome(comp)
    if args.html:
        _write_html(args.html, lambda html: html.compare_page(comp, f"{args.base} -> {args.new}"))
    if args.format == "json":
        from harness.render.documents import compare_document, print_document

        print_document(compare_document(comp, str(args.base), str(args.new)))
        return code
    for line in cmp.environment_notes(comp):  # before the verdicts: what may explain them
        print_note(line)
    header, cells, styles, right_from = tables.compare_cells(comp)
    _emit(args, header, cells, styles, right_from, f"{args.base} -> {args.new}")
    for line in cmp.notes(comp):
        print_note(line)
    for p in comp.failed:
        print_error(f"{cmp.run_label(p, comp.keys)}: {'; '.join(p.problems)}")
    if not comp.failed:
        print_note(reason)
    return code


def cmd_plugins(args: argparse.Namespace) -> int:
    from harness.registry import load_registry  # lazy: it imports the plugins (torch)
    from harness.render.listings import print_plugins  # lazy: it imports the plugin bases (torch)

    registry = load_registry(args.plugins, base_dir=Path.cwd())
    if args.format == "json":
        from harness.render.documents import plugins_document, print_document

        print_document(plugins_document(registry))
    else:
        print_plugins(registry)
    return ExitCode.OK


def cmd_analyze(args: argparse.Namespace) -> int:
    from harness.analyze import analyze_dataset  # lazy: tokenizers and the plugins (torch)
    from harness.config.suite import parse_set
    from harness.render.listings import print_analysis  # lazy: it imports the plugin bases (torch)

    max_lens = None
    if args.max_len:
        try:
            max_lens = [int(x) for x in args.max_len.split(",") if x.strip()]
        except ValueError:
            raise HarnessError(f"--max-len {args.max_len}: expected numbers separated by commas, e.g. 64,128") from None
        if not max_lens or min(max_lens) < 2:
            raise HarnessError(f"--max-len {args.max_len}: expected numbers >= 2, e.g. 64,128")
    if args.batch_size < 1:
        raise HarnessError(f"--batch-size {args.batch_size}: expected a positive number")
    if args.subset is not None and args.subset < 1:
        raise HarnessError(f"--subset {args.subset}: expected a positive number")
    options = parse_set(args.options)
    plugins = [str(Path(p).resolve()) if p.endswith(".py") else p for p in args.plugins]
    result = analyze_dataset(
        args.dataset, model=args.model, split=args.split, options=options, max_lens=max_lens,
        batch_size=args.batch_size, subset=args.subset, seed=args.seed, data_dir=args.data_dir, plugins=plugins,
        strategies=args.strategies,
    )
    if args.format == "json":
        from harness.render.documents import analysis_document, print_document

        print_document(analysis_document(result))
    else:
        print_analysis(result)
    return ExitCode.OK


def _estimate(args: argparse.Namespace, runs):
    """Every run's estimate (:func:`harness.estimate.estimate_suite`) as the options ask."""
    from harness.estimate import estimate_suite  # lazy: tokenizers, and the probe's torch

    limit = parse_size(args.memory_limit) if args.memory_limit else None
    return estimate_suite(runs, calibration_file=Path(args.calibration) if args.calibration else None,
                          probe=not args.no_probe, memory_limit_bytes=limit)


def cmd_estimate(args: argparse.Namespace) -> int:
    from harness.render import estimates

    if args.output and args.format == "table":
        raise HarnessError("--output writes md, csv or json; add --format md, csv or json")
    price = None
    if args.price is not None:
        try:
            price = float(args.price)
        except ValueError:
            price = -1.0
        if not price >= 0:
            raise HarnessError(f"--price {args.price}: expected a price per hour, a number >= 0, e.g. 2.5")
    suite, runs, _ = _load(args)
    result = _estimate(args, runs)
    title = f"{suite.name}: predicted ({len(runs)} run{'s' if len(runs) != 1 else ''})"
    if args.format == "json":
        from harness.render.documents import estimate_document

        _emit_document(args, estimate_document(suite.name, *estimates.estimate_values(result, price),
                                               result.total_seconds, estimates.estimate_notes(result, price)))
    elif args.format == "csv":
        header, cells = estimates.estimate_csv(result, price)
        _emit(args, header, cells, [], 0, title)
    else:
        header, cells, styles, right_from = estimates.estimate_cells(result, price)
        _emit(args, header, cells, styles, right_from, title)
    for line in estimates.estimate_notes(result, price):
        print_note(line)
    if args.plot is not None:
        print_note(f"plot: {estimates.write_estimate_plot(result, args.plot, title=suite.name)}")
    return ExitCode.OK


def cmd_calibrate(args: argparse.Namespace) -> int:
    from harness import estimate as est  # lazy: tokenizers, and the probe's torch
    from harness.records.calibration import write_calibration

    path = Path(args.calibration) if args.calibration else est.default_calibration_file()
    if args.from_dir:
        calibrations = est.calibrate_from_results(Path(args.from_dir))
    else:
        _, runs, _ = _load(args)
        calibrations = est.calibrate_runs(runs)
    for calibration in calibrations:
        write_calibration(path, calibration)
        for line in est.describe_calibration(calibration):
            print_note(line)
    print_note(f"{len(calibrations)} calibration{'s' if len(calibrations) != 1 else ''} kept in {path}")
    return ExitCode.OK


COMMANDS = {"run": cmd_run, "validate": cmd_validate, "plugins": cmd_plugins, "analyze": cmd_analyze,
            "estimate": cmd_estimate, "calibrate": cmd_calibrate, "report": cmd_report, "compare": cmd_compare}


class _NoteHandler(logging.Handler):
    """Shows the ``harness`` loggers' records (INFO and above) as notes on stderr: the modules
    below the command line log, only the command line (through :mod:`harness.render`) prints."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print_note(record.getMessage())
        except Exception:  # noqa: BLE001 - logging's own policy: a broken handler never stops the run
            self.handleError(record)


def _show_log_notes() -> None:
    """Route the ``harness`` loggers to :func:`harness.render.console.print_note`, once per process."""
    logger = logging.getLogger("harness")
    if not any(isinstance(h, _NoteHandler) for h in logger.handlers):
        logger.addHandler(_NoteHandler(logging.INFO))
    logger.setLevel(logging.INFO)
    logger.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    _show_log_notes()
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # environment.json's command line
    try:
        return int(COMMANDS[args.command](args))
    except HarnessError as exc:
        print_error(str(exc))
        if exc.detail and os.environ.get(TRACEBACK_ENV, "").strip() not in ("", "0"):
            sys.stderr.write(exc.detail.rstrip() + "\n")
        return int(exc.exit_code)
    except KeyboardInterrupt:  # before any run started (loading, preflight): nothing to keep
        print_note("interrupted")
        return int(ExitCode.INTERRUPTED)
    except OSError as exc:  # a write for want of room (disk full, quota, read-only): one line too
        error = no_room(exc)
        if error is None:
            raise
        print_error(str(error))
        return int(error.exit_code)


def entry() -> None:  # pragma: no cover - the console script
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    entry()
