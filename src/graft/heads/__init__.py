"""Heads: torch head modules every model is built from (:mod:`.modules`: linear, MLP,
prototype, kNN, RBF-SVM, multi-task) and the classical fits on features that produce them
(:mod:`.classical`, scikit-learn)."""
