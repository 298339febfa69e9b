"""Linear and nearest-neighbour probes: how much class information the codes hold."""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)

KNN_NEIGHBORS = 10


def probe_accuracies(train_codes: np.ndarray, train_labels: np.ndarray, test_codes: np.ndarray,
                     test_labels: np.ndarray, n_jobs: int = 1) -> dict[str, float]:
    """Fit logistic regression and k-NN on standardised training codes; return test accuracies.

    Keys are `logreg_acc` and `knn_acc`. A probe that cannot be fitted (fewer
    than two classes in the training codes, or no codes) is left out with a
    log message.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    n_classes = len(np.unique(train_labels))
    if len(test_codes) == 0 or n_classes < 2:
        logger.info("Skipping the probes: they need training codes of at least 2 classes and test codes "
                    "(got %d training codes of %d classes, %d test codes)", len(train_codes), n_classes,
                    len(test_codes))
        return {}
    logreg = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    knn = make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=min(KNN_NEIGHBORS, len(train_codes)),
                                                               n_jobs=n_jobs))
    accuracies = {}
    for name, probe in (("logreg_acc", logreg), ("knn_acc", knn)):
        probe.fit(train_codes, train_labels)
        accuracies[name] = float(probe.score(test_codes, test_labels))
    return accuracies
