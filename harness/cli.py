"""The command line: ``harness run | validate | plugins``.

User mistakes raise :class:`HarnessError`; they are caught once, here, printed as one red
line without a traceback, and exit with code 2. A suite in which a run failed or
diverged exits 1. Ctrl-C or SIGTERM exits 130 after saying how to resume.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from harness import __version__
from harness.errors import ExitCode, HarnessError

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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


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

    validate = sub.add_parser("validate", help="check a suite and print its expanded runs; runs nothing")
    _add_suite_args(validate)

    plugins = sub.add_parser("plugins", help="list datasets, tokenizer strategies and heads, with their options")
    plugins.add_argument("--plugin", dest="plugins", action="append", default=[], metavar="MODULE_OR_PATH")
    return parser


def _load(args: argparse.Namespace):
    from harness.plugins import load_registry
    from harness.suite import load_suite, parse_set, resolve

    suite = load_suite(args.suite)
    overrides = parse_set(args.overrides)
    if args.nproc is not None:
        overrides["launcher.nproc"] = args.nproc
    # suite-named modules are relative to the suite file, --plugin ones to the working directory
    local = [*suite.plugins, *(str(Path(p).resolve()) if p.endswith(".py") else p for p in args.plugins)]
    registry = load_registry(local, base_dir=suite.path.parent)
    return suite, resolve(suite, registry, overrides)


def cmd_validate(args: argparse.Namespace) -> int:
    from harness import report

    suite, runs = _load(args)
    report.print_runs(suite.name, [r.record_config() | {"run_id": r.run_id} for r in runs])
    return ExitCode.OK


def cmd_run(args: argparse.Namespace) -> int:
    from harness import report
    from harness.results import prepare_out_dir
    from harness.runner import preflight, run_suite

    suite, runs = _load(args)
    out = prepare_out_dir(args.out or Path(DEFAULT_OUT_ROOT) / suite.name)
    preflight(runs)
    try:
        records = run_suite(runs, out, rerun=args.rerun, show_progress=not args.no_progress)
    except KeyboardInterrupt:
        report.print_note(
            f"interrupted: finished runs are kept in {out / 'results.jsonl'}; "
            f"run the same command again to resume"
        )
        return ExitCode.INTERRUPTED
    report.print_table(records, title=f"{suite.name} ({len(records)} runs)")
    report.print_note(f"results: {out / 'results.jsonl'}")
    bad = [r for r in records if r.get("status") != "ok"]
    return ExitCode.RUN_FAILED if bad else ExitCode.OK


def cmd_plugins(args: argparse.Namespace) -> int:
    from harness import report
    from harness.plugins import load_registry

    report.print_plugins(load_registry(args.plugins, base_dir=Path.cwd()))
    return ExitCode.OK


COMMANDS = {"run": cmd_run, "validate": cmd_validate, "plugins": cmd_plugins}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(COMMANDS[args.command](args))
    except HarnessError as exc:
        from harness.report import print_error

        print_error(str(exc))
        return int(exc.exit_code)


def entry() -> None:  # pragma: no cover - the console script
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    entry()
