"""Classification metrics by name, from scikit-learn's well-kept implementations.

A dataset lists the names it reports (``metrics = ("mcc", "accuracy")``); the first is
its main metric, the one tables sort and plots draw by.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef


MetricFn = Callable[[np.ndarray, np.ndarray], float]

METRICS: dict[str, MetricFn] = {
    "accuracy": lambda y, p: float(accuracy_score(y, p)),
    # Matthews correlation: CoLA's metric; 0 for a constant prediction, as GLUE reports it
    "mcc": lambda y, p: float(matthews_corrcoef(y, p)),
    # F1 of the positive class (label 1), as GLUE reports it for MRPC
    "f1": lambda y, p: float(f1_score(y, p, pos_label=1, average="binary", zero_division=0)),
    "macro_f1": lambda y, p: float(f1_score(y, p, average="macro", zero_division=0)),
}


def compute(names: Sequence[str], labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    return {name: METRICS[name](labels, predictions) for name in names}
