"""Names that layers below the recipes need and the command line reads before anything heavy is
imported (no torch here). Every other default is a field of a recipe's Config
(:mod:`graft.recipes.settings`)."""

DEFAULT_BACKBONE = "tf_efficientnet_lite0"
# The classical heads of graft.heads.classical, in registration order (checked there).
HEAD_NAMES = ("logreg", "linear-svm", "rbf-svm", "knn", "prototype")
