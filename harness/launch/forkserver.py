"""The fork server: each single-process run's process forked from a Python that imported torch once.

A run in a fresh process of its own (:mod:`harness.launch.process`) paid its imports every
time (torch, transformers, the loop: about 3.3 s on two cores, before its clock started).
``harness run`` now starts this server once for a suite with a single-process run to train
here (:func:`serving`, or :func:`start` earlier, so that its imports overlap the checks
before the first run); the server imports :data:`harness.launch.worker.IMPORTS` and then
forks one child per run (:func:`fork`), which reads its spec and trains as ``python -m
harness.launch.worker`` would. Data-parallel runs (torchrun), SLURM jobs and
``--isolation none`` never use it.

What a forked child keeps of a fresh process, and how:

- **Nothing of another run.** The server never runs a torch op: no allocator state, no
  compiled graph, no tensor, CUDA untouched (checked before it serves), and one thread
  (checked, ``/proc/self/task``: fork copies only the calling thread, so the server refuses
  to serve with more). numpy's and scipy's OpenBLAS start helper threads when imported, so
  the server imports them told one thread (``OPENBLAS_NUM_THREADS=1``) and the child gives
  them the count a fresh process would have read. Its peak memory (``VmHWM``) is its own:
  the pages it shares with the server count in its resident set as an exec'd worker's
  imports would.
- **Its output**: its stdout and stderr are ``run.log`` (``dup2``), unbuffered as with
  ``PYTHONUNBUFFERED``.
- **Its own session** (``os.setsid``): Ctrl-C reaches ``harness run`` alone, which stops it.
- **It dies with ``harness run``**: the server dies with ``harness run``
  (``PR_SET_PDEATHSIG``; it also ends when its socket to ``harness run`` closes), the child
  with the server (``PR_SET_PDEATHSIG`` again). The server is in its own session too.
- **Its environment** is the one :meth:`~harness.launch.process.RunProcess._env` gives
  (``HARNESS_PARENT_PID``, ``OMP_NUM_THREADS``, ``HARNESS_CPUS``, ``CUDA_VISIBLE_DEVICES``,
  ...), set before any CUDA call; it pins itself to its cores and sets torch's threads
  (libgomp read ``OMP_NUM_THREADS`` in the server, at import). Its working directory is
  ``harness run``'s. A run whose ``harness run`` changed its environment since the server
  started (what the imports read) starts as before.
- **Its end**: the server reaps it and reports ``os.waitstatus_to_exitcode`` (negative: the
  signal that killed it); :class:`Forked` answers as :class:`subprocess.Popen` does, so the
  timeout, ``stop_all``, the failure reasons and the OOM-kill detection are unchanged.

Unlike an exec'd worker's, its stdin is /dev/null, warnings its imports printed went to the
server's own file (once), and its string hash seed is the server's.

``HARNESS_FORKSERVER=0`` turns it off: each run then starts as ``python -m
harness.launch.worker WORKDIR``, as it does where there is no fork (not Linux) and, after one
warning line, where the server fails.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from harness.launch import worker

log = logging.getLogger(__name__)

#: ``HARNESS_FORKSERVER=0``: no fork server; every run's process starts as ``python -m harness.launch.worker``
ENV = "HARNESS_FORKSERVER"
#: how long a run waits for the server to be ready (its imports) or to fork, before it starts without it
READY_SECONDS = 120.0
#: what the warning line says the runs do instead
INSTEAD = "each run starts in a new `python -m harness.launch.worker`, seconds of imports more a run"


def enabled() -> bool:
    """Not turned off (:data:`ENV`), and this platform forks (Linux: ``PR_SET_PDEATHSIG``, ``/proc``)."""
    return os.environ.get(ENV, "").strip() != "0" and sys.platform.startswith("linux") and hasattr(os, "fork")


# ---------------------------------------------------------------- harness run's side


class Forked:
    """A run's process the server forked, with what the launcher uses of :class:`subprocess.Popen`
    (``pid``, ``returncode``, :meth:`poll`, :meth:`wait`, :meth:`send_signal`, :meth:`kill`).
    It is the server's child: its exit comes from the server."""

    def __init__(self, server: ForkServer, pid: int):
        self.server, self.pid = server, pid
        self.args = [f"forked run process {pid}"]

    @property
    def returncode(self) -> int | None:
        return self.server.exits.get(self.pid)

    def poll(self) -> int | None:
        self.server.read(0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.returncode is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout)
            self.server.read(left)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):  # it ended since the look
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class ForkServer:
    """The server as ``harness run`` holds it: started at once, ready once it says so; its
    messages (JSON lines on a socket pair) are read whenever a run's process is looked at."""

    def __init__(self) -> None:
        self.environ = dict(os.environ)  # what its imports read
        self.sock, theirs = socket.socketpair()
        self.output = tempfile.TemporaryFile()  # what it prints: the reason, when it fails
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", __name__, str(theirs.fileno()), str(os.getpid())],
                stdin=subprocess.DEVNULL, stdout=self.output, stderr=subprocess.STDOUT, pass_fds=[theirs.fileno()],
                env=dict(self.environ, OPENBLAS_NUM_THREADS="1"), start_new_session=True,
            )
        except OSError:
            self.sock.close()
            self.output.close()
            raise
        finally:
            theirs.close()  # the server's end is the server's alone: it sees harness run's end as EOF
        self.ready: bool | None = None  # None until it says
        self.problem: str | None = None
        self.exits: dict[int, int] = {}
        self.forked: list[int] = []  # its answers to fork requests, in order
        self.running: set[int] = set()
        self._buffer = b""

    def read(self, timeout: float | None) -> None:
        """Take in what the server said, waiting up to ``timeout`` seconds (None: until it says something)."""
        if self.proc.returncode is not None:  # closed
            return
        if not select.select([self.sock], [], [], timeout)[0]:
            return
        try:
            data = self.sock.recv(1 << 16)
        except OSError:
            data = b""
        if not data:
            self.close(f"ended ({self._last_words()})")
            return
        *lines, self._buffer = (self._buffer + data).split(b"\n")
        for line in lines:
            self._take(json.loads(line))

    def _take(self, message: dict[str, Any]) -> None:
        if "exit" in message:
            self.exits[message["exit"]] = message["code"]
            self.running.discard(message["exit"])
        elif "pid" in message:
            self.forked.append(message["pid"])
            self.running.add(message["pid"])
        elif "ready" in message:
            self.ready = True
        else:
            self.ready, self.problem = False, message.get("error", "said something else")

    def fork(self, workdir: Path, env: dict[str, str], log_path: Path) -> Forked | None:
        """A child for the run in ``workdir``; None when the server cannot fork one (:attr:`problem` says why)."""
        if not self.wait_ready():
            return None
        request = {"workdir": str(workdir), "env": env, "log": str(log_path), "cwd": os.getcwd()}
        try:
            self.sock.sendall(json.dumps(request).encode() + b"\n")
        except OSError as exc:
            self.close(f"could not be asked ({exc})")
            return None
        if not self._wait(lambda: bool(self.forked), "did not fork"):
            return None
        return Forked(self, self.forked.pop(0))

    def wait_ready(self) -> bool:
        """Whether the server is ready to fork, once it said so (up to :data:`READY_SECONDS`)."""
        return self._wait(lambda: self.ready is not None, "was not ready") and bool(self.ready)

    def _wait(self, done: Any, failure: str) -> bool:
        deadline = time.monotonic() + READY_SECONDS
        while not done() and self.proc.returncode is None:
            left = deadline - time.monotonic()
            if left <= 0:
                self.close(f"{failure} after {READY_SECONDS:g} s")
                break
            self.read(left)
        return done()

    def close(self, problem: str | None = None) -> None:
        """Stop the server (it never trained: nothing to clean up); the children it still had
        died with it (``PR_SET_PDEATHSIG``), killed."""
        if self.proc.returncode is not None:
            return
        self.problem = self.problem or problem
        self.sock.close()
        self.proc.kill()
        self.proc.wait()
        for pid in self.running:
            self.exits.setdefault(pid, -signal.SIGKILL)
        self.running.clear()
        self.output.close()

    def _last_words(self) -> str:
        self.output.seek(0)
        lines = self.output.read().decode("utf-8", "replace").strip().splitlines()
        return lines[-1] if lines else f"exit code {self.proc.poll()}"


#: the server of this ``harness run`` (one at a time), and whether its failure was said
_server: ForkServer | None = None
_warned = False


def start(runs: Sequence[Any]) -> None:
    """Start the server when one of ``runs`` trains in a single process and it is not off
    (:func:`enabled`); at once: its imports go on beside whatever comes next. One already
    started in this environment is kept (one started in another is stopped)."""
    global _server, _warned
    if _server is not None and _server.environ != dict(os.environ):
        stop()
    if _server is not None or not enabled() or not any(r.config.world_size == 1 for r in runs):
        return
    _warned = False
    try:
        _server = ForkServer()
    except OSError as exc:
        _warn(f"could not start ({exc})")


def stop() -> None:
    global _server
    if _server is not None:
        _server.close()
        _server = None


@contextlib.contextmanager
def serving(runs: Sequence[Any]) -> Iterator[None]:
    """The server for ``runs`` while they train (:func:`start`: one already started is kept), stopped after."""
    start(runs)
    try:
        yield
    finally:
        stop()


def fork(workdir: Path, env: dict[str, str], log_path: Path) -> Forked | None:
    """The run's process, forked by the server; None when none serves (the caller starts it
    as before; a server that failed is said once, in a warning line, and stopped)."""
    if _server is None:
        return None
    if dict(os.environ) != _server.environ:  # its imports read another environment
        _warn("started in another environment than this run's (os.environ changed since)")
        return None
    forked = _server.fork(workdir, env, log_path)
    if forked is None:
        _warn(_server.problem or "failed")
        stop()
    return forked


def _warn(problem: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        log.warning(f"warning: the fork server {problem}: {INSTEAD} (HARNESS_FORKSERVER=0 says so quietly)")


# ------------------------------------------------------------------------ the server


def main(argv: Sequence[str]) -> int:
    """``python -m harness.launch.forkserver FD PARENT_PID``: import, then fork a child per
    request that comes on socket FD from ``harness run`` (PARENT_PID); in a child, the run's
    exit code."""
    worker.die_with_parent(int(argv[1]))
    conn = socket.socket(fileno=int(argv[0]))
    problem = _prepare()
    if problem is not None:
        _say(conn, {"error": problem})
        return 1
    _say(conn, {"ready": os.getpid()})
    request = _serve(conn)
    return 0 if request is None else _child(request)


def _prepare() -> str | None:
    """Import what every run imports; why this process cannot serve, or None."""
    try:
        worker.import_all()
    except Exception as exc:  # noqa: BLE001 - said to harness run, which starts its runs as before
        return f"could not import what the runs import ({type(exc).__name__}: {exc})"
    import torch

    # one thread, checked here: what the imports of worker.IMPORTS leave (numpy's and scipy's
    # OpenBLAS told one thread); a fork copies only the calling thread
    threads = len(os.listdir("/proc/self/task"))
    if threads != 1:
        return f"had {threads} threads after its imports (a fork needs one)"
    if torch.cuda.is_initialized():
        return "initialised CUDA while it imported"
    return None


def _serve(conn: socket.socket) -> dict[str, Any] | None:
    """Fork a child for each request on ``conn`` and say each child's pid, then its exit;
    None once ``harness run`` closed ``conn`` (the server ends, its children with it); in a
    child, its request."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler: each child's end wakes the select below
    signal.set_wakeup_fd(wake_w)
    buffer, me = b"", os.getpid()
    while True:
        readable = select.select([conn, wake_r], [], [])[0]
        if wake_r in readable:
            os.read(wake_r, 4096)
            if not _reap(conn):
                return None
        if conn not in readable:
            continue
        data = conn.recv(1 << 16)
        if not data:
            return None
        *lines, buffer = (buffer + data).split(b"\n")
        for line in lines:
            request = dict(json.loads(line), server=me)
            pid = os.fork()
            if pid == 0:  # the child leaves the server's loop with its request
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                os.close(wake_r)
                os.close(wake_w)
                conn.close()
                return request
            if not _say(conn, {"pid": pid}):
                return None


def _reap(conn: socket.socket) -> bool:
    """Say the exit of each child that ended; False when ``harness run`` is gone."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return True
        if pid == 0:
            return True
        if not _say(conn, {"exit": pid, "code": os.waitstatus_to_exitcode(status)}):
            return False


def _say(conn: socket.socket, message: dict[str, Any]) -> bool:
    try:
        conn.sendall(json.dumps(message).encode() + b"\n")
        return True
    except OSError:  # harness run is gone
        return False


def _child(request: dict[str, Any]) -> int:
    """Become the run's process, as ``python -m harness.launch.worker WORKDIR`` would have been."""
    worker.die_with_parent(request["server"])  # dies with the server, which dies with harness run
    os.setsid()  # its own session: Ctrl-C reaches harness run, which stops it
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    _output_to(request["log"])
    sys.argv = [worker.__file__, request["workdir"]]
    worker.pin_cores()
    _threads()
    return worker.work(Path(request["workdir"]))


def _output_to(path: str) -> None:
    """stdout and stderr to the run's log, unbuffered (``PYTHONUNBUFFERED``): nothing lost when it dies."""
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    for name in ("stdout", "stderr"):
        old = getattr(sys, name)
        raw = io.FileIO(old.fileno(), "w", closefd=False)
        setattr(sys, name, io.TextIOWrapper(raw, encoding=old.encoding, errors=old.errors, write_through=True))


#: OpenBLAS's setter of its thread count, as numpy's (64-bit ints) and scipy's builds name it
_BLAS_SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                 "openblas_set_num_threads64_", "openblas_set_num_threads")


def _threads() -> None:
    """The thread counts a fresh process would have started with: torch's from
    ``OMP_NUM_THREADS`` (libgomp read the server's at import), OpenBLAS's as it reads them
    (``OPENBLAS_NUM_THREADS``, ``GOTO_NUM_THREADS``, ``OMP_NUM_THREADS``, else its cores)."""
    import torch  # imported by the server: no time

    given = os.environ.get("OMP_NUM_THREADS", "").strip()
    if given.isdigit() and int(given) > 0:
        torch.set_num_threads(int(given))
    read = (os.environ.get(k, "").strip() for k in ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS"))
    blas = next((int(v) for v in read if v.isdigit() and int(v) > 0), len(os.sched_getaffinity(0)))
    if blas == 1:  # as the server left them
        return
    for path in sorted({line.split()[-1] for line in open("/proc/self/maps") if "openblas" in line and ".so" in line}):
        lib = ctypes.CDLL(path)  # loaded already: the same library
        setter = next((getattr(lib, name) for name in _BLAS_SETTERS if hasattr(lib, name)), None)
        if setter is not None:
            setter(blas)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
