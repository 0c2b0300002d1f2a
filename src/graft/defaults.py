"""Names the command line needs before anything heavy is imported (no torch here)."""

DEFAULT_BACKBONE = "tf_efficientnet_lite0"
# The classical heads of graft.heads.classical, in registration order (checked there).
HEAD_NAMES = ("logreg", "linear-svm", "rbf-svm", "knn", "prototype")
# graft finetune's stage plan when none is given (see graft.train.stages for the syntax).
# Head epochs on the frozen base cost well under a second each (its outputs are computed once).
DEFAULT_STAGES = "head:20,top2:5"
