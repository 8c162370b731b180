"""Launching runs: a fresh process per run, several at once, or jobs of a scheduler.

- :mod:`harness.launch.spec`: the run's :class:`~harness.launch.spec.RunSpec`, the only thing
  that crosses to the process that trains it;
- :mod:`harness.launch.process`: that process, started, supervised, its end turned into a record;
- :mod:`harness.launch.worker`: what runs in it;
- :mod:`harness.launch.forkserver`: where it is forked from (a single-process run), torch imported once;
- :mod:`harness.launch.events`: its progress, as typed messages;
- :mod:`harness.launch.failures`: why a run did not finish, classified in one place;
- :mod:`harness.launch.executors`: N runs at once on this machine (``--jobs``);
- :mod:`harness.launch.slurm`: jobs of a SLURM cluster (``--executor``);
- :mod:`harness.launch.runner`: a suite, checked before its first run, then dispatched.

A run's work directory, ``<out>/.launch-<run_id>-<random>/``, holds these files (named
here, where the worker reads them without importing torch first):
"""

SPEC, RECORD, EVENTS, RANK0, OWNER = "spec.json", "record.json", "events.jsonl", "rank0", "owner"
#: a run's work directory in the output directory: ``<out>/.launch-<run_id>-<random>``
WORKDIR_PREFIX = ".launch-"
#: the cores a worker pins itself to (``0,1``), set by the parent for ``--jobs``
CPUS_ENV = "HARNESS_CPUS"
