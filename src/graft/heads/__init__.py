"""Heads: torch head modules every model is built from (:mod:`.modules`: linear, MLP,
prototype, kNN, RBF-SVM, multi-task) and the classical heads fitted on features that fill them:
scikit-learn estimators (:mod:`.estimators`, :mod:`.neighbours`, sharing :mod:`.search`),
registered once in :mod:`.registry`, fitted by name with :func:`.classical.fit_head`."""
