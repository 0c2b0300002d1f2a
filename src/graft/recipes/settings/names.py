"""Choice lists and shared defaults of the recipes' settings."""
OPTIMIZER_NAMES = ("adamw", "adam", "sgd", "rmsprop")
SCHEDULE_NAMES = ("cosine", "onecycle")
REGULARIZERS = ("l2sp", "lwf", "bss")
ADVERSARY_NAMES = ("dann", "cdan", "none")
WEIGHTING_NAMES = ("fixed", "uncertainty")
DEFAULT_VAL_FRACTION = 0.2
# fine-tuning settings the recipes that do not fine-tune a pretrained network leave out of their command
NOT_FINETUNING = ("freeze_first", "regularizer", "regularizer_weight", "transfer_layers", "transfer_from",
                  "freeze_transferred")
