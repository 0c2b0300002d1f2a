"""Settings of the recipes that train a network: finetune, pretrain, adapt, distill, lr-find,
multitask."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from graft.config import Config, absolute_path, check_head_spec, parse_tasks, setting
from graft.data.augmentation import AUGMENTATIONS, augmentation_name
from graft.defaults import BASE_LR_FACTOR, DEFAULT_BACKBONE, LR, OPTIMIZER, SCHEDULE, WEIGHT_DECAY
from graft.errors import GraftError
from graft.recipes.settings.names import (
    ADVERSARY_NAMES,
    DEFAULT_VAL_FRACTION,
    MAX_BETA,
    MAX_FACTOR,
    MAX_LR,
    MAX_TEMPERATURE,
    MAX_WEIGHT,
    NOT_FINETUNING,
    OPTIMIZER_NAMES,
    REGULARIZERS,
    SAMPLER_NAMES,
    SCHEDULE_NAMES,
    WEIGHTING_NAMES,
)
from graft.recipes.settings.selftaught import SELF_TAUGHT, self_taught_settings


@dataclass
class FinetuneConfig(Config):
    """``graft finetune``: head transplant and staged unfreezing of a pretrained backbone, with
    optional conservation training (L2-SP, Li et al. 2018; LwF, Li & Hoiem 2016; BSS, Chen et
    al. 2019) and layer transfer. Also the base of every recipe that trains a network."""

    # fields its command does not show
    CLI_HIDDEN: ClassVar[tuple[str, ...]] = ("pretrained",)
    # the command's --help
    HELP: ClassVar[str] = ("Fine-tune: new head on the frozen base, then unfreeze more with a smaller LR. "
                           "Checkpoints are written every epoch; after a kill or Ctrl-C, `graft resume RUN` "
                           "continues where it stopped.")

    PATHS: ClassVar[tuple[str, ...]] = ("train_dir", "val_dir", "test_dir", "weights", "exclude")
    COMMAND: ClassVar[str] = "finetune"
    # the settings graft.json's "training" records (how the model was made), beside "method" (the command)
    RECORDED: ClassVar[tuple[str, ...]] = ("stages", "head", "lr", "base_lr_factor", "layer_decay", "optimizer",
                                           "weight_decay", "schedule", "augment", "mixup", "cutmix", "class_weight",
                                           "sampler", "regularizer", "pretrained", "seed", "train_dir", "val_dir")

    train_dir: str = setting(None, "Training class-folder tree.", argument="data", path=True)
    val_dir: str | None = setting(None, "Validation class-folder tree.", flag="--val", path=True)
    val_fraction: float | None = setting(None, "Hold out this stratified fraction of DATA (default 0.2 when --val "
                                               "is not given).", flag="--val-split", low=0, high=1, open=True)
    backbone: str = setting(DEFAULT_BACKBONE, "Backbone: a registered name, a timm architecture, or a graft run "
                                              "folder.", short="-b")
    weights: str | None = setting(None, "Local .safetensors/.pth weights for a timm architecture.", path=True)
    head: str = setting("linear", "linear, or mlp:HIDDEN (FC-ReLU-Dropout-FC).")
    stages: str = setting("head:20,top2:5", "Stage plan NAME:EPOCHS,... with NAME head, topN or all.")
    freeze_first: str | None = setting(None, "Instead of the plan's freezing: freeze the first K layers (index or "
                                             "name from `graft layers`), train the rest.")
    lr: float | str = setting(LR, "Head learning rate, or 'auto': an LR range test on the first stage picks it "
                                  "(lr_find.png in the run folder).", lr=True, low=0, high=MAX_LR, open="low")
    base_lr_factor: float = setting(BASE_LR_FACTOR, "Unfrozen backbone layers train at lr x this.", low=0,
                                    high=MAX_FACTOR, open="low")
    layer_decay: float | None = setting(None, "Layer-wise LR decay: each trainable backbone layer below the top one "
                                              "trains at this times the LR of the layer above it.", low=0, high=1,
                                        open="low")
    optimizer: str = setting(OPTIMIZER, "Optimizer.", choices=OPTIMIZER_NAMES)
    weight_decay: float = setting(WEIGHT_DECAY, "Weight decay.", low=0, high=1)
    schedule: str = setting(SCHEDULE, "Per stage: warm-up then cosine decay, or one-cycle.", choices=SCHEDULE_NAMES)
    image_size: int | None = setting(None, "Train and evaluate at this resolution (default: the weights' own).",
                                     low=32)
    batch_size: int = setting(32, "Images per batch.", low=1)
    seed: int = setting(0, "Random seed (split, initialisation, shuffles, augmentation).")
    augment: str = setting("crop-flip", "Augmentation for stages that train backbone layers.", choices=AUGMENTATIONS)
    augment_head_stage: bool = setting(False, "Augment head-only stages too (by default they train on plain "
                                              "images, so the frozen base runs once per stage).")
    mixup: float = setting(0.0, "MixUp Beta(a, a) on augmented stages' batches (0 = off).", low=0, high=MAX_BETA)
    cutmix: float = setting(0.0, "CutMix Beta(a, a) on augmented stages' batches (0 = off).", low=0, high=MAX_BETA)
    regularizer: str | None = setting(None, "Conservation training: stay close to the source model (l2sp, lwf), or "
                                            "shrink the smallest feature singular values (bss).", choices=REGULARIZERS)
    regularizer_weight: float = setting(0.01, "Weight of the conservation term.", low=0, high=MAX_WEIGHT)
    patience: int | None = setting(None, "Early stopping: epochs in a row without a better --monitor value.",
                                   low=1)
    monitor: str = setting("val_accuracy", "What picks the kept (best) epoch and what early stopping watches.",
                           choices=("val_accuracy", "val_loss"))
    mode: str = setting("auto", "Which way --monitor is better: max, min, or auto (min for a loss, else max).",
                        choices=("auto", "max", "min"))
    class_weight: str | None = setting(None, "Weigh each class by n / (classes x its count), as scikit-learn's "
                                             "'balanced', so a small class is not ignored.", choices=("balanced",))
    sampler: str = setting("shuffle", "balanced: draw every class equally often (with replacement) in each epoch.",
                           choices=SAMPLER_NAMES)
    test_dir: str | None = setting(None, "A labelled test folder, scored once at the end with the model validation "
                                         "chose (reports in RUN/test/).", flag="--test", path=True)
    final: bool = setting(False, "After training, train again on training + validation images for the epochs "
                                 "validation chose, and save that model.")
    exclude: str | None = setting(None, "Leave out the images a CSV lists (graft audit's RUN/audit.csv, or an "
                                        "edited copy); rows with a 'relabel' class keep the image with that class.",
                                  path=True)
    pretrained: bool = setting(True, "Random initial weights instead of pretrained ones.", flag="--from-scratch")
    transfer_layers: str | None = setting(None, "first:K, last:K or NAME[,NAME...]: copy these layers into a freshly "
                                                "initialised network of the same architecture; the rest starts random.")
    transfer_from: str | None = setting(None, "Where the copied layers come from: a backbone name or a graft run "
                                              "folder (default: the network trained, pretrained).")
    freeze_transferred: bool = setting(False, "Keep the copied layers frozen in every stage.")

    def __post_init__(self):
        if self.train_dir is None:
            raise GraftError(f"missing {self.flag('train_dir')}: the labelled training folder")
        if self.val_dir is None and self.val_fraction is None:
            self.val_fraction = DEFAULT_VAL_FRACTION
        self.augment = augmentation_name(self.augment)
        check_head_spec(self.head)
        super().__post_init__()
        if self.transfer_from and not self.transfer_layers:
            raise GraftError("--transfer-from names where copied layers come from: give --transfer-layers too")
        if self.freeze_transferred and not self.transfer_layers:
            raise GraftError("--freeze-transferred needs --transfer-layers")

    def training_record(self) -> dict:
        """What graft.json's ``training`` says about how the model was made: ``method`` (the
        command) and the ``RECORDED`` settings (a regularizer's weight only with one)."""
        record = {"method": self.COMMAND, **{name: getattr(self, name) for name in self.RECORDED}}
        if self.regularizer:
            record["regularizer_weight"] = self.regularizer_weight
        return record


@dataclass
class PretrainConfig(FinetuneConfig):
    """``graft pretrain``: a network trained from random initialisation on a labelled source
    folder, or (``unlabelled_dir``) a pretrained one continued self-supervised on unlabelled
    images (self-taught learning, :mod:`graft.recipes.selftaught`); its run folder is then a
    backbone for every other command (``--backbone RUN``)."""

    # fields its command does not show
    CLI_HIDDEN: ClassVar[tuple[str, ...]] = ("freeze_first", "regularizer", "regularizer_weight", "pretrained",
                                             "layer_decay")
    # the command's --help
    HELP: ClassVar[str] = ("Train a network from random initialisation on a labelled source folder, or continue a "
                           "pretrained one self-supervised on --unlabelled images; the run folder is then a backbone "
                           "for every other command (--backbone RUN).")

    PATHS: ClassVar[tuple[str, ...]] = FinetuneConfig.PATHS + ("unlabelled_dir",)
    COMMAND: ClassVar[str] = "pretrain"
    RECORDED: ClassVar[tuple[str, ...]] = FinetuneConfig.RECORDED + ("unlabelled_dir",)

    backbone: str = setting(None, "Any timm architecture (e.g. resnet10t, tf_efficientnet_lite0); with --unlabelled "
                                  "also a registered name or a run folder (default " + DEFAULT_BACKBONE + ").",
                            flag="--arch")
    stages: str | None = setting(None, "Stage plan (default all:10 from labels; " + str(SELF_TAUGHT["stages"]) +
                                       " with --unlabelled).")
    lr: float | str | None = setting(None, "Learning rate, or 'auto' (default 2e-3; " + str(SELF_TAUGHT["lr"]) +
                                           " with --unlabelled).", lr=True, low=0, high=MAX_LR, open="low")
    base_lr_factor: float | None = setting(None, "Backbone layers train at lr x this (default 1; " +
                                                 str(SELF_TAUGHT["base_lr_factor"]) + " with --unlabelled).", low=0,
                                           high=MAX_FACTOR, open="low")
    batch_size: int | None = setting(None, "Images per batch (default 64; " + str(SELF_TAUGHT["batch_size"]) +
                                           " with --unlabelled).", low=1)
    augment: str = setting("none", "none suits digits and text (a mirrored 2 is no 2).", choices=AUGMENTATIONS)
    pretrained: bool = setting(False, "Start from pretrained weights.", hidden=True)
    unlabelled_dir: str | None = setting(None, "Self-taught: continue the pretrained network self-supervised "
                                               "(--objective) on these unlabelled images (any layout, folder names "
                                               "ignored) instead of training on DATA's labels.", flag="--unlabelled",
                                         path=True)
    objective: str | None = setting(None, "With --unlabelled, the self-supervised task: rotation (predict a turn of "
                                          "0/90/180/270 degrees) or simsiam (two augmented views agree) (default " +
                                          str(SELF_TAUGHT["objective"]) + ").", choices=("rotation", "simsiam"))

    def __post_init__(self):
        if self.objective and not self.unlabelled_dir:
            raise GraftError("--objective is the self-supervised task of --unlabelled images: give those too")
        if self.unlabelled_dir:
            self_taught_settings(self)
            Config.__post_init__(self)
            return
        defaults = {"stages": "all:10", "lr": 2e-3, "base_lr_factor": 1.0, "batch_size": 64}
        for name, value in defaults.items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if not self.backbone:
            raise GraftError("pretrain needs an architecture (--arch), or --unlabelled images to continue a "
                             "pretrained network on")
        super().__post_init__()


@dataclass
class AdaptConfig(FinetuneConfig):
    """``graft adapt``: domain-adversarial training (DANN, Ganin et al. JMLR 2016; CDAN, Long
    et al. NeurIPS 2018) from a labelled source folder (``train_dir``) and unlabelled target
    images. ``adversary="none"`` is source-only: the same run without the target."""

    # fields its command does not show
    CLI_HIDDEN: ClassVar[tuple[str, ...]] = NOT_FINETUNING + ("test_dir", "final")
    # The adversarial method's task loss is plain cross-entropy on unmixed source batches (a balanced
    # source is --sampler balanced); it has no conservation term.
    REFUSED: ClassVar[tuple[str, ...]] = ("class_weight", "mixup", "cutmix", "regularizer", "regularizer_weight")
    # the command's --help
    HELP: ClassVar[str] = ("Domain adaptation: learn from a labelled --source folder and unlabelled --target "
                           "images (DANN by default; --adversary none is source-only: the target never enters the "
                           "network).")

    PATHS: ClassVar[tuple[str, ...]] = FinetuneConfig.PATHS + ("target_dir", "target_val_dir")
    COMMAND: ClassVar[str] = "adapt"
    RECORDED: ClassVar[tuple[str, ...]] = FinetuneConfig.RECORDED + (
        "adversary", "adversary_weight", "discriminator_width", "target_dir", "target_val_dir")

    train_dir: str = setting(None, "Labelled source class-folder tree.", flag="--source", path=True)
    target_dir: str | None = setting(None, "Unlabelled target images (any layout; class folder names are ignored).",
                                     flag="--target", path=True)
    target_val_dir: str | None = setting(None, "Labelled target images, scored each epoch and at the end "
                                               "(RUN/target/); never trained on.", flag="--target-val", path=True)
    backbone: str = setting("auto", "Backbone (name, timm architecture, run folder), or auto: from the source images' "
                                    "size (under 64 px: resnet10t from random weights; else " + DEFAULT_BACKBONE + ").",
                            short="-b")
    image_size: int | None = setting(None, "Input resolution (default: from the source images' size; 32 px for "
                                           "digits).", low=32)
    adversary: str = setting("dann", "none: source-only, the same run without the adversary and the target.",
                             choices=ADVERSARY_NAMES)
    adversary_weight: float = setting(0.3, "Largest gradient-reversal weight (ramped up from 0 over training).",
                                      low=0, high=MAX_WEIGHT)
    discriminator_width: int = setting(1024, "Hidden units in each of the domain discriminator's two layers.",
                                       low=1)
    stages: str | None = setting(None, "Stage plan NAME:EPOCHS,... (default: all:24 from random weights, all:12 "
                                       "from pretrained ones).")
    lr: float | str = setting(2e-3, "Learning rate, or 'auto'.", lr=True, low=0, high=MAX_LR, open="low")
    base_lr_factor: float = setting(1.0, "Backbone layers train at lr x this.", low=0, high=MAX_FACTOR, open="low")
    batch_size: int = setting(64, "Images per batch (per domain).", low=1)
    augment: str = setting("crop", "crop: random-resized crops, no mirror (a mirrored 2 is no 2); the digits' "
                                   "scale is most of the MNIST -> USPS gap.", choices=AUGMENTATIONS)

    def __post_init__(self):
        if not self.target_dir:
            raise GraftError("adapt needs unlabelled target images (--target)")
        super().__post_init__()


# distill's default plans. With a transfer set (10 labelled + 50 unlabelled flowers17 images per
# class, lite0 at 128 px, BENCHMARKS.md, issues 18 and 30) head:20 is the measured plan: 0.8853 at
# seed 0, +7.1 points over the student alone; head:5,top2:5 scored 0.8618 there (issue 30: +1.8
# over the student alone, below the teacher).
DISTILL_PLAN, DISTILL_PLAN_WITH_TRANSFER_SET = "head:5,top2:5", "head:20"


@dataclass
class DistillConfig(FinetuneConfig):
    """``graft distill``: a student backbone trained from a teacher run's temperature-softened
    outputs and the labels (Hinton, Vinyals & Dean 2015)."""

    # fields its command does not show
    CLI_HIDDEN: ClassVar[tuple[str, ...]] = NOT_FINETUNING + ("pretrained",)
    REFUSED: ClassVar[tuple[str, ...]] = ("regularizer", "regularizer_weight")  # no conservation term
    # the command's --help
    HELP: ClassVar[str] = ("Teacher-student: train --student on DATA from a graft run's softened outputs and the "
                           "labels.")

    PATHS: ClassVar[tuple[str, ...]] = FinetuneConfig.PATHS + ("teacher", "unlabelled_dir")
    COMMAND: ClassVar[str] = "distill"
    RECORDED: ClassVar[tuple[str, ...]] = FinetuneConfig.RECORDED + (
        "teacher", "temperature", "alpha", "unlabelled_dir", "teacher_inputs")

    teacher: str | None = setting(None, "A graft run folder or model: the teacher.", path=True)
    backbone: str = setting(None, "The student's backbone (a smaller network).", flag="--student")
    temperature: float = setting(4.0, "Softmax temperature of the soft targets.", low=0, high=MAX_TEMPERATURE,
                                open="low")
    alpha: float | None = setting(None, "Weight of the teacher's soft targets; 1 - alpha on the labels (0 = no "
                                        "teacher). Default 0.9 with --unlabelled, else 0.5.", low=0, high=1)
    stages: str | None = setting(None, "Stage plan NAME:EPOCHS,... (default: head:20 with --unlabelled, else "
                                       "head:5,top2:5).")
    unlabelled_dir: str | None = setting(None, "Transfer set: unlabelled images (any layout, folder names ignored) "
                                               "learnt from the teacher's soft targets.", flag="--unlabelled",
                                         path=True)
    teacher_inputs: str = setting("augmented", "Augmented stages: the teacher labels the student's crop at each "
                                               "step, or each plain image once (faster).",
                                  choices=("augmented", "plain"))

    def __post_init__(self):
        if not self.teacher:
            raise GraftError("distill needs a teacher run (--teacher)")
        if not self.backbone:
            raise GraftError("distill needs a student backbone (--student)")
        if self.stages is None:
            self.stages = DISTILL_PLAN_WITH_TRANSFER_SET if self.unlabelled_dir else DISTILL_PLAN
        if self.lr == "auto":  # the range test sweeps plain labels; a student learns from the teacher too
            raise GraftError("distill has no --lr auto: run `graft lr-find DATA --backbone STUDENT` and pass its LR")
        super().__post_init__()
        if self.unlabelled_dir and self.sampler == "balanced":
            raise GraftError("--sampler balanced draws by label and --unlabelled images have none: use the default")
        if (self.mixup or self.cutmix) and self.teacher_inputs == "plain":
            raise GraftError("--mixup/--cutmix need --teacher-inputs augmented (the teacher labels mixed images)")


@dataclass
class LRFindConfig(FinetuneConfig):
    """``graft lr-find``: the LR range test (Smith, "Cyclical Learning Rates", WACV 2017) of one
    stage of the model ``finetune`` would build: ``steps`` batches at exponentially growing LR
    from ``start`` to ``end``."""

    # fields its command does not show
    CLI_HIDDEN: ClassVar[tuple[str, ...]] = NOT_FINETUNING + ("lr", "schedule", "mixup", "cutmix", "patience",
                                                               "test_dir", "final", "pretrained", "monitor", "mode")
    # the sweep trains with plain (class-weighted) cross-entropy on unmixed batches, for its own steps
    REFUSED: ClassVar[tuple[str, ...]] = ("regularizer", "regularizer_weight", "mixup", "cutmix", "patience",
                                          "schedule", "test_dir", "final")
    COMMAND: ClassVar[str] = "lr-find"
    HELP: ClassVar[str] = ("LR range test: loss vs exponentially growing LR on DATA's training split; plots it "
                           "to OUT/lr_find.png (and .json) and prints the suggested head LR (or use `finetune --lr "
                           "auto`).")

    stage: str = setting("head", "Which parameters train during the sweep: head, topN or all.")
    augment: str = setting("none", "Augmentation of the sweep's batches.", choices=AUGMENTATIONS)
    start: float = setting(1e-6, "First learning rate.", low=0, high=MAX_LR, open="low")
    end: float = setting(1.0, "Last learning rate.", low=0, high=MAX_LR, open="low")
    steps: int = setting(100, "Batches in the sweep.", low=5)
    # The sweep's plan is its one stage, every batch as given.
    stages: str = setting("head:1", "", hidden=True)
    augment_head_stage: bool = setting(True, "", hidden=True)

    def __post_init__(self):
        self.stages = f"{self.stage}:1"
        super().__post_init__()


@dataclass
class MultitaskConfig(Config):
    """``graft multitask``: one shared backbone, one head per task; every step draws a batch of
    every task; fixed or learned uncertainty task weights (Kendall, Gal & Cipolla, CVPR 2018)."""

    # fields its command does not show
    CLI_HIDDEN: ClassVar[tuple[str, ...]] = ()
    # the command's --help
    HELP: ClassVar[str] = "One shared network, one head per task: graft multitask flowers=DIR insects=DIR -o RUN."

    COMMAND: ClassVar[str] = "multitask"

    tasks: dict = setting({}, "NAME=DIR: a task and its class-folder tree (two or more).", argument="tasks")
    val_dirs: dict = setting({}, "TASK=DIR: that task's validation tree (repeatable).", flag="--val")
    val_fraction: float = setting(DEFAULT_VAL_FRACTION, "Hold out this fraction of each task without --val.",
                                  flag="--val-split", low=0, high=1, open=True)
    weighting: str = setting("fixed", "Sum of task losses with fixed weights, or learned uncertainty weights.",
                             choices=WEIGHTING_NAMES)
    task_sampling: str = setting("proportional", "Each step a batch of one task, interleaved so an epoch sees every "
                                                 "image once (the cost of separate runs), or a batch of every task "
                                                 "(smaller tasks cycled).", choices=("proportional", "together"))
    task_weights: dict = setting({}, "TASK=W: fixed loss weight (default 1).", flag="--task-weight")
    backbone: str = setting(DEFAULT_BACKBONE, "Backbone: a registered name, a timm architecture, or a graft run "
                                              "folder.", short="-b")
    weights: str | None = setting(None, "Local .safetensors/.pth weights for a timm architecture.", path=True)
    image_size: int | None = setting(None, "Input resolution (default: the weights' own).", low=32)
    head: str = setting("linear", "Each task's head: linear, or mlp:HIDDEN.")
    stages: str = setting("head:5,top2:5", "Stage plan NAME:EPOCHS,...")
    lr: float = setting(LR, "Head learning rate (no 'auto': see `graft lr-find`).", lr=True, low=0, high=MAX_LR,
                        open="low")
    base_lr_factor: float = setting(BASE_LR_FACTOR, "Unfrozen backbone layers train at lr x this.", low=0,
                                    high=MAX_FACTOR, open="low")
    batch_size: int = setting(32, "Images per task batch.", low=1)
    # Library only (the command trains with the defaults): saved with the run, so a resume trains as it started.
    optimizer: str = setting(OPTIMIZER, "Optimizer.", choices=OPTIMIZER_NAMES, hidden=True)
    weight_decay: float = setting(WEIGHT_DECAY, "Weight decay.", low=0, high=1, hidden=True)
    schedule: str = setting(SCHEDULE, "Per stage: warm-up then cosine decay, or one-cycle.", choices=SCHEDULE_NAMES,
                            hidden=True)
    seed: int = setting(0, "Random seed.")
    augment: str = setting("crop-flip", "Augmentation for stages that train backbone layers.", choices=AUGMENTATIONS)
    augment_head_stage: bool = setting(False, "Augment head-only stages too (by default they train on plain "
                                              "images, so the frozen base runs once per stage).")
    train_statistics: bool = setting(False, "BatchNorm running statistics follow the batches (default: pretrained).")

    def __post_init__(self):
        self.tasks = {name: absolute_path(folder) for name, folder in parse_tasks(self.tasks).items()}
        self.val_dirs = {name: absolute_path(folder) for name, folder in parse_tasks(self.val_dirs, "--val").items()}
        weights = parse_tasks(self.task_weights, "--task-weight")
        try:
            self.task_weights = {name: float(value) for name, value in weights.items()}
            if not all(0 <= w <= MAX_WEIGHT for w in self.task_weights.values()):  # NaN fails too
                raise ValueError
        except ValueError:
            raise GraftError(f"--task-weight {weights}: each weight must be a number >= 0 and at most "
                             f"{MAX_WEIGHT:g}") from None
        self.augment = augmentation_name(self.augment)
        check_head_spec(self.head)
        if self.lr == "auto":  # the range test sweeps one loader; a multi-task step draws several
            raise GraftError("multitask has no --lr auto: run `graft lr-find DIR` on its largest task, pass its LR")
        super().__post_init__()
