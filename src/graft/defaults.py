"""Names and defaults that layers below the recipes need and the command line reads before anything
heavy is imported (no torch here).

The registries of optimizers, schedules, conservation regularizers, adversaries and samplers are
written here, once: the recipes' Configs take their ``choices`` from them, and the modules that build
the things (:mod:`graft.train.optim`, :mod:`graft.train.loaders`, :mod:`graft.methods.regularization`,
:mod:`graft.methods.alignment`) look names up in them. The training loop's defaults are shared the same
way by the fine-tuning Configs (``graft finetune``'s options) and :class:`graft.train.LoopSettings` (the
library's). Every other default is a field of a recipe's Config (:mod:`graft.recipes.settings`); the
classical heads' names are in :mod:`graft.heads.registry`."""

DEFAULT_BACKBONE = "tf_efficientnet_lite0"

# --optimizer NAME -> the torch.optim class and its keyword arguments besides the learning rate and weight decay
OPTIMIZERS = {
    "adamw": ("AdamW", {}),
    "adam": ("Adam", {}),
    "sgd": ("SGD", {"momentum": 0.9, "nesterov": True}),
    "rmsprop": ("RMSprop", {"momentum": 0.9}),
}
# --schedule, per stage: warm-up then cosine decay, or one-cycle (graft.train.optim)
SCHEDULES = ("cosine", "onecycle")
# --regularizer: conservation terms (graft.methods.regularization.conservation_term)
REGULARIZERS = ("l2sp", "lwf", "bss")
# --adversary of graft adapt (graft.methods.alignment); none is source-only
ADVERSARIES = ("dann", "cdan", "none")
# --sampler: how training batches are drawn (graft.train.loaders.training_loader)
SAMPLERS = ("shuffle", "balanced")

# Frozen inference: the engine (auto: ONNX Runtime, torch where it cannot answer) and images per batch. graft fit's
# --engine and --batch-size (FrozenFitConfig; predict and evaluate share them) and the library's FeatureExtractor and
# PredictOptions start from these.
ENGINE = "auto"
BATCH_SIZE = 32

# The training loop's defaults: the head's peak learning rate, the factor of unfrozen backbone layers,
# the optimizer, its weight decay and the schedule.
LR = 1e-3
BASE_LR_FACTOR = 0.1
OPTIMIZER = "adamw"
WEIGHT_DECAY = 1e-4
SCHEDULE = "cosine"
