"""Configuration, from the suite file to resolved runs.

- :mod:`harness.config.strict`: the one strict base of every typed settings model;
- :mod:`harness.config.keys`: every key a run may set (:class:`~harness.config.keys.RunConfig`),
  which of them make its run id (:func:`~harness.config.keys.run_id`), the docs' key table;
- :mod:`harness.config.sentences`: pydantic's errors as one line naming the key;
- :mod:`harness.config.suite`: the YAML file (safe loader, line numbers), layering and ``--set``;
- :mod:`harness.config.resolve`: a run resolved, every plugin looked up and typed
  (:func:`~harness.config.resolve.resolve_run`, the one function that does it, wherever).
"""
