"""The results store under faults nobody listed: a store corrupted by a crash mid-write
(set aside, never silently dropped) and a full disk (one line, nothing half-written,
resumable)."""

from __future__ import annotations

import json

from helpers import tiny_sets
from harness.records.store import RESULTS_FILE, read_records, repair


def _record(run_id: str) -> bytes:
    return (json.dumps({"run_id": run_id, "status": "ok", "config": {}, "epochs": [], "metrics": {}}) + "\n").encode()


def test_repair_keeps_every_valid_record_and_sets_the_bad_bytes_aside(tmp_path):
    first, second = _record("a"), _record("b")
    garbage, cut = b"\x00\xffnot a record\n", _record("c")[:25]  # a line of garbage, a last line cut short
    store = tmp_path / RESULTS_FILE
    store.write_bytes(first + garbage + second + cut)

    note = repair(tmp_path)

    aside = sorted(tmp_path.glob(f"{RESULTS_FILE}.corrupt-*"))
    assert len(aside) == 1
    assert aside[0].read_bytes() == garbage + cut  # byte for byte, nothing of it lost
    assert store.read_bytes() == first + second  # every valid record, as it was
    assert note == (f"{store}: 2 lines that are no run record (line 2: not valid UTF-8 (invalid start byte), ...) "
                    f"set aside in {aside[0]}; the 2 valid records kept")
    assert repair(tmp_path) is None  # nothing left to repair: nothing written
    assert sorted(tmp_path.glob(f"{RESULTS_FILE}.corrupt-*")) == aside


def test_run_on_a_corrupted_store_says_so_keeps_the_runs_and_trains_nothing_again(cli, write_suite, tmp_path):
    suite = write_suite("name: corrupt\ndefaults: {dataset: cola, strategy: fixed}\n")
    out = tmp_path / "out"
    args = ("run", suite, "--out", out, "--no-progress", "--no-plot", "--isolation", "none", *tiny_sets())
    assert cli(*args)[0] == 0
    store = out / RESULTS_FILE
    good = store.read_bytes()
    store.write_bytes(good + b"this is not json\n" + good[: len(good) // 2])  # garbage, then a half-written line

    code, _, err = cli(*args)

    assert code == 0, err
    aside = next(out.glob(f"{RESULTS_FILE}.corrupt-*"))
    notes = [line for line in err.splitlines() if "set aside" in line]
    assert len(notes) == 1 and f"set aside in {aside}; the 1 valid record kept" in notes[0], err
    assert "1 of 1 run already done" in err  # the kept record counts: the run is not trained again
    assert store.read_bytes() == good
    assert aside.read_bytes() == b"this is not json\n" + good[: len(good) // 2]
    assert len(read_records(out)) == 1
