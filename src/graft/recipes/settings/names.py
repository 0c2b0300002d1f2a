"""Choice lists and shared defaults of the recipes' settings. The registries' names are
:mod:`graft.defaults`'s, read here under the names the settings use."""
from graft.defaults import ADVERSARIES, OPTIMIZERS, SAMPLERS, SCHEDULES
from graft.defaults import REGULARIZERS as REGULARIZERS

OPTIMIZER_NAMES = tuple(OPTIMIZERS)
SCHEDULE_NAMES = SCHEDULES
ADVERSARY_NAMES = ADVERSARIES
SAMPLER_NAMES = SAMPLERS
WEIGHTING_NAMES = ("fixed", "uncertainty")
DEFAULT_VAL_FRACTION = 0.2
# fine-tuning settings the recipes that do not fine-tune a pretrained network leave out of their command
NOT_FINETUNING = ("freeze_first", "regularizer", "regularizer_weight", "transfer_layers", "transfer_from",
                  "freeze_transferred")
# Upper bounds of numeric settings: beyond them no run trains (an LR of 1e38 overflows the
# optimizer; Beta(a, a) past 10 is a fixed 50/50 blend), so they are refused before anything is written.
MAX_LR = 10.0
MAX_FACTOR = 10.0  # backbone LR factors
MAX_BETA = 10.0  # MixUp/CutMix Beta(a, a)
MAX_WEIGHT = 100.0  # loss-term weights (conservation, adversary, task)
MAX_TEMPERATURE = 100.0
