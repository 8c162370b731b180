"""The results store under faults nobody listed: a store corrupted by a crash mid-write
(set aside, never silently dropped) and a full disk (one line, nothing half-written,
resumable)."""

from __future__ import annotations

import contextlib
import errno
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import tiny_sets
from harness.errors import NoRoom
from harness.records.store import RESULTS_FILE, ResultsStore, read_records, repair


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


# ------------------------------------------------------------------------------ a full disk

NO_SPACE = "No space left on device"


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, NO_SPACE)


def test_a_store_write_without_room_leaves_the_store_as_it_was(tmp_path, monkeypatch):
    import harness.records.store as store_module

    store = ResultsStore(tmp_path)
    store.add(json.loads(_record("a")))
    before = (tmp_path / RESULTS_FILE).read_bytes()
    monkeypatch.setattr(store_module.os, "fsync", _no_space)  # the disk fills while the new file is written

    with pytest.raises(NoRoom) as caught:
        ResultsStore(tmp_path).add(json.loads(_record("b")))

    assert str(caught.value) == (f"{tmp_path / RESULTS_FILE}: cannot write the results ({NO_SPACE}); the runs "
                                 "recorded before are intact: make room (or pick another --out) and run the same "
                                 "command again")
    assert (tmp_path / RESULTS_FILE).read_bytes() == before  # no half-written record
    assert not list(tmp_path.glob(".results-*.tmp"))  # its temporary file removed
    monkeypatch.undo()  # room again: the same write goes through
    ResultsStore(tmp_path).add(json.loads(_record("b")))
    assert [r["run_id"] for r in read_records(tmp_path)] == ["a", "b"]


def _one_error(err: str) -> str:
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def test_a_side_file_write_without_room_stops_the_suite_in_one_line_and_resumes(cli, write_suite, tmp_path,
                                                                                 monkeypatch):
    import harness.records.sidefiles as sidefiles

    suite = write_suite("name: full\ndefaults: {dataset: cola, strategy: fixed}\nmatrix:\n  seed: [1, 2]\n")
    out = tmp_path / "out"
    args = ("run", suite, "--out", out, "--no-progress", "--no-plot", "--isolation", "none", *tiny_sets())
    write = sidefiles.write_atomically
    calls = []

    def second_run_fails(path, *rest):
        calls.append(path)
        if len(calls) > 2:  # the first run's two side files go through, then the disk is full
            raise OSError(errno.ENOSPC, NO_SPACE, str(path))
        return write(path, *rest)

    monkeypatch.setattr(sidefiles, "write_atomically", second_run_fails)
    code, _, err = cli(*args)

    assert code == 2
    assert _one_error(err) == (f"error: {calls[2]}: cannot write it ({NO_SPACE}); what was stored before is "
                               "intact: make room (or pick another --out) and run the same command again")
    first = read_records(out)
    assert [r["config"]["seed"] for r in first] == [1]  # the first run is stored, the second not half of it
    monkeypatch.setattr(sidefiles, "write_atomically", write)
    code, _, err = cli(*args)  # room again: the same command trains only the missing run
    assert code == 0, err
    records = read_records(out)
    assert [r["config"]["seed"] for r in records] == [1, 2] and records[0] == first[0]


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MiB tmpfs (root only); skipped, with the reason, where none can be mounted."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command here")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip() or 'not root'})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path) -> Path:
    """Fill the disk to its last byte."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 4096)
    return filler


def test_a_full_disk_keeps_the_earlier_records_says_one_line_and_the_same_command_resumes(cli, write_suite,
                                                                                           small_disk):
    """On a real full filesystem (a tmpfs), whichever write of a run hits it first: the
    lock file, the run's work directory, a side file, the store."""
    out = small_disk / "out"
    one = write_suite("name: full\ndefaults: {dataset: cola, strategy: fixed}\nmatrix:\n  seed: [1]\n", "one.yaml")
    two = write_suite("name: full\ndefaults: {dataset: cola, strategy: fixed}\nmatrix:\n  seed: [1, 2]\n", "two.yaml")
    assert cli("run", one, "--out", out, "--no-progress", "--no-plot", *tiny_sets())[0] == 0
    before = (out / RESULTS_FILE).read_bytes()
    filler = _fill(small_disk)

    code, _, err = cli("run", two, "--out", out, "--no-progress", *tiny_sets())

    assert code != 0
    line = _one_error(err)
    assert NO_SPACE in line and str(small_disk) in line, line
    assert (out / RESULTS_FILE).read_bytes() == before  # the earlier record intact, nothing half-written
    filler.unlink()  # room again: the same command trains the missing run
    code, _, err = cli("run", two, "--out", out, "--no-progress", *tiny_sets())
    assert code == 0, err
    records = read_records(out)
    assert [r["config"]["seed"] for r in records] == [1, 2]
    assert (json.dumps(records[0]) + "\n").encode() == before
