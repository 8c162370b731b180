"""``<out>/environment.json``: the whole environment a results directory was made in, once.

``harness run`` writes it when it first writes into a results directory (:func:`write_once`,
atomically, with :func:`harness.records.store.write_atomically`): the command line, the
suite file's sha256 and its expanded runs, the installed packages and their versions, the
environment variables that change performance (:func:`variables`), the CPU's model and the
flags that matter, torch's version and build, and on an NVIDIA GPU its clocks, power limit
and MIG mode. A later ``harness run`` into the same directory (a resume) leaves the file as
it is; where the machine's entries differ from it, it says so in one line naming the first.

``harness compare`` reads both sides' files (:func:`side`; a side without one: what its
records' ``env`` holds) and names the entries that differ (:func:`differences`) before its
verdicts. Reading needs no torch; collecting (:func:`collect`) asks :mod:`harness.loop.env`.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

from harness import __version__
from harness.errors import HarnessError

ENVIRONMENT_FILE = "environment.json"
FORMAT = 1
#: environment variables recorded by name, and by prefix (``TORCH_*``, ``HARNESS_*`` ...)
VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "CUDA_VISIBLE_DEVICES",
             "CUDA_LAUNCH_BLOCKING", "PYTORCH_CUDA_ALLOC_CONF", "TOKENIZERS_PARALLELISM", "TRANSFORMERS_OFFLINE",
             "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
PREFIXES = ("TORCH_", "HARNESS_", "OMP_", "KMP_", "MKL_", "NCCL_")
#: a variable whose name holds one of these is never recorded (a token is no performance setting)
SECRET = ("TOKEN", "KEY", "SECRET", "PASSWORD", "CREDENTIAL")
#: the entries a resume checks against the file, and the order compare names differences in
MACHINE = ("variables", "torch", "cpu", "gpu", "python", "harness", "packages")
#: a record's ``env`` key -> the entry of :func:`flat` it tells
RECORD_ENTRIES = {"torch": "torch.version", "cuda": "torch.cuda", "cpu": "cpu.model", "python": "python",
                  "harness_version": "harness.version", "harness_git_sha": "harness.git_sha",
                  "transformers": "package transformers"}


def variables(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The set environment variables that change performance: :data:`VARIABLES`, those
    starting with :data:`PREFIXES`, and every ``HF_*_OFFLINE``; none that looks like a secret."""
    environ = os.environ if environ is None else environ
    out = {}
    for name in sorted(environ):
        wanted = (name in VARIABLES or name.startswith(PREFIXES)
                  or (name.startswith("HF_") and name.endswith("_OFFLINE")))
        if wanted and not any(s in name.upper() for s in SECRET):
            out[name] = environ[name]
    return out


def packages() -> dict[str, str]:
    """Every installed distribution and its version (importlib.metadata), by name."""
    out = {}
    for dist in metadata.distributions():
        name = dist.metadata.get("Name")
        if name:
            out.setdefault(name.lower().replace("_", "-"), dist.version)
    return dict(sorted(out.items()))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def collect(command: Sequence[str], suite_path: Path, runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What :data:`ENVIRONMENT_FILE` holds; ``runs``: each expanded run's ``run_id`` and ``config``."""
    from harness.loop.env import _git_sha, cpu_details, gpu_details, torch_build  # lazy: torch (harness run only)

    out: dict[str, Any] = {
        "format": FORMAT,
        "command": list(command),
        "cwd": os.getcwd(),
        "suite": {"path": str(suite_path), "sha256": sha256(suite_path)},
        "runs": [dict(r) for r in runs],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hostname": platform.node(),
        "executable": sys.executable,
        "harness": {"version": __version__, "git_sha": _git_sha()},
        "variables": variables(),
        "cpu": cpu_details(),
        "torch": torch_build(),
        "packages": packages(),
    }
    gpus = gpu_details()
    if gpus is not None:
        out["gpu"] = gpus
    return out


def read_environment(folder: Path) -> dict[str, Any] | None:
    """The folder's environment file, or None where it has none (or an unreadable one)."""
    path = Path(folder) / ENVIRONMENT_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_once(folder: Path, environment: dict[str, Any]) -> str | None:
    """Write the environment file unless the folder has one; then, where the machine's entries
    (:data:`MACHINE`) differ from it, a line naming the first difference (the file is kept)."""
    from harness.errors import no_room
    from harness.records.store import write_atomically

    path = Path(folder) / ENVIRONMENT_FILE
    if path.exists():
        kept = read_environment(folder)
        if kept is None:
            return f"{path}: unreadable, kept as it is; this run's environment is not recorded"
        found = differences(flat(kept), flat(environment), both_files=True)
        if not found:
            return None
        key, was, now = found[0]
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        return (f"{path}: this run's environment differs from the one the directory's first runs were made in: "
                f"{key} {_text(was)} there, {_text(now)} now{more}; the file keeps the first")
    text = json.dumps(environment, indent=2, default=str) + "\n"
    try:
        write_atomically(path, lambda f: f.write(text.encode("utf-8")), ".environment-")
    except OSError as exc:
        raise no_room(exc) or HarnessError(f"{path}: cannot write it ({exc.strerror or exc})") from None
    return None


def flat(environment: dict[str, Any]) -> dict[str, Any]:
    """The machine's entries (:data:`MACHINE`) as named lines: ``OMP_NUM_THREADS``,
    ``torch.build``, ``cpu.flags``, ``package transformers``, ``gpu0.power_limit_w``."""
    out: dict[str, Any] = {}
    for section in MACHINE:
        value = environment.get(section)
        if section == "variables":
            out.update((name, v) for name, v in (value or {}).items())
        elif section == "packages":
            out.update((f"package {name}", v) for name, v in (value or {}).items())
        elif section == "gpu":
            for i, gpu in enumerate(value or []):
                out.update((f"gpu{i}.{k}", v) for k, v in gpu.items())
        elif isinstance(value, dict):
            out.update((f"{section}.{k}", " ".join(v) if isinstance(v, list) else v) for k, v in value.items()
                       if section != "torch" or k != "threads")
        elif value is not None:
            out[section] = value
    return out


def from_records(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What records' ``env`` say of the entries of :func:`flat` (a side with no environment
    file): torch, the CPU, python, the harness and transformers versions."""
    def one(key: str) -> Any:
        found = sorted({str((r.get("env") or {}).get(key)) for r in records if (r.get("env") or {}).get(key)})
        return ", ".join(found) or None

    pairs = {entry: one(key) for key, entry in RECORD_ENTRIES.items()}
    return {k: v for k, v in pairs.items() if v is not None}


def side(folder: Path, records: Sequence[dict[str, Any]]) -> tuple[dict[str, Any], bool]:
    """One side of a comparison: its environment entries (:func:`flat`), and whether they come
    from its environment file (else from its records' ``env``)."""
    kept = read_environment(folder)
    return (flat(kept), True) if kept is not None else (from_records(records), False)


def differences(base: dict[str, Any], new: dict[str, Any], both_files: bool) -> list[tuple[str, Any, Any]]:
    """``(entry, base, new)`` for each entry that differs, in :func:`flat`'s order (variables,
    torch, CPU, GPU, python, harness, packages). Two environment files: an entry on one side
    only differs (a variable set on one side, a package installed on one); else only the
    entries both sides know are compared."""
    keys = list(dict.fromkeys([*base, *new])) if both_files else [k for k in base if k in new]
    return [(k, base.get(k), new.get(k)) for k in keys if base.get(k) != new.get(k)]


def _text(value: Any) -> str:
    return "unset" if value is None else str(value)


def difference_notes(found: Sequence[tuple[str, Any, Any]], limit: int = 12) -> list[str]:
    """``harness compare``'s first lines: each differing entry, BASE's value and NEW's."""
    out = [f"note: environment differs: {key}: BASE {_text(b)}, NEW {_text(n)}" for key, b, n in found[:limit]]
    if len(found) > limit:
        out.append(f"note: environment differs in {len(found) - limit} more entries (--format json lists them all)")
    return out
