"""What runs leave behind, with no torch: the record (:mod:`~harness.records.record`), the results
store (:mod:`~harness.records.store`), pure summaries, comparisons, and the exporters' calls."""
