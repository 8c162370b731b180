"""Statistics, with no torch: classification metrics from confusion matrices and their
bootstrap intervals (:mod:`harness.stats.metrics`), the intervals and tests the tables and
comparisons report (:mod:`harness.stats.intervals`)."""
