"""Multi-task fine-tuning (``graft multitask TASK=DIR ...``): one shared backbone, one head
per task, trained together on the engine with :class:`~graft.methods.multitask.MultiTask`.

The artifact is an ordinary graft model whose head is a :class:`~graft.heads.modules.MultiTaskHead`:
its classes are ``task/class`` and graft.json lists the tasks, so ``predict`` gives each task's
top-k and single-task artifacts load as before. Reports per task land in ``RUN/<task>/``.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from graft._io.files import read_json, write_atomic
from graft.artifacts.model import GraftModel
from graft.artifacts.run_folder import GRAFT_OUTPUTS, RunDir, open_run, write_html_safely
from graft.data.datasets import ImageDataset
from graft.data.folders import load_train_val
from graft.errors import GraftError
from graft.heads.modules import MultiTaskHead
from graft.methods import evaluate_loader
from graft.methods.multitask import MultiTask
from graft.recipes._run import FitResult, check_not_an_input, manifest_of
from graft.recipes._run_plan import make_head, whole_folder
from graft.recipes.settings import MultitaskConfig, parse_tasks  # noqa: F401  (parse_tasks re-exported)
from graft.recipes.settings.versions import settings_record
from graft.reporting.metrics import Scored
from graft.train.callbacks import FrozenPrefix, load_checkpoint, standard_callbacks
from graft.train.loaders import training_loader
from graft.train.prefix import pooled_encoder
from graft.train.stages import parse_stages
from graft.train.trainer import LoopSettings, Network, TrainData, Trainer

COMMAND = "multitask"


def multitask(config, out=None, *, strict: bool = False, progress: bool = True, overwrite: bool = False,
              **settings) -> FitResult:
    """Train one network with one head per task on several labelled folders (``graft multitask``).

    Parameters
    ----------
    config : MultitaskConfig or dict
        The settings; or ``{task name: class-folder tree}``, with the Config's other fields as
        keywords (``settings``).
    out : str or pathlib.Path
        The run folder: new, empty, or an earlier run of this command (replaced).
    strict : bool, default False
        Stop at the first unreadable image (DataError) instead of skipping it with a warning.
    progress : bool, default True
        Show progress bars on stderr.
    overwrite : bool, default False
        Write into a folder that holds something else than an earlier run of this command.
    **settings
        Fields of :class:`~graft.recipes.settings.MultitaskConfig`, when ``config`` is a dict.

    Returns
    -------
    FitResult
        The run folder and its metrics (per task: accuracy, macro F1, ``n_train``, ``n_val``);
        each task's reports are in ``RUN/<task>/``.

    Raises
    ------
    GraftError
        Fewer than two tasks, task names in ``val_dirs`` / ``task_weights`` that are no task, or
        a setting no run can use; raised before the run folder is touched.
    DataError
        A task folder that is missing, empty or without readable images.

    Notes
    -----
    One shared backbone (hard parameter sharing), one head per task; every step draws a batch
    of every task. ``config.weighting``: the task losses summed with ``config.task_weights``
    (default 1 each), or with learned uncertainty weights.

    References
    ----------
    Caruana, "Multitask Learning", Machine Learning 28, 1997. Kendall, Gal and Cipolla,
    "Multi-Task Learning Using Uncertainty to Weigh Losses", CVPR 2018.
    """
    if not isinstance(config, MultitaskConfig):
        config = MultitaskConfig(tasks=dict(config), **settings)
    elif settings:
        raise GraftError(f"pass settings in the MultitaskConfig or as keywords, not both: {', '.join(settings)}")
    if len(config.tasks) < 2:
        raise GraftError("multitask needs at least two tasks (NAME=DIR NAME=DIR ...); one task is graft finetune")
    check_task_names(config.tasks)
    unknown = sorted(set(config.val_dirs) - set(config.tasks)) + sorted(set(config.task_weights) - set(config.tasks))
    if unknown:
        raise GraftError(f"--val / --task-weight name task(s) that are not given: {', '.join(unknown)}")
    start = time.perf_counter()
    splits, scanned = _splits(config)  # each folder scanned once; data problems said before the run folder
    check_not_an_input(out, config)
    plan = _plan(config, splits, strict=strict, progress=progress)  # the network built once, its plan checked
    run = open_run(out, COMMAND, overwrite=overwrite)
    with run.lock(COMMAND):
        run.write_config(settings_record(COMMAND, config.to_dict()))
        write_atomic(run.path / "data.json", json.dumps(_manifests(scanned)) + "\n")
        return _train(run, config, plan, progress=progress, resume=None, start=start)


# Entries of a run folder a task's report folder (RUN/<task>/) would write into: the folders among
# graft's own outputs (task names have no dots). Compared case-blind: macOS and Windows folders are.
RESERVED_TASK_NAMES = tuple(name for name in GRAFT_OUTPUTS if "." not in name)


def check_task_names(tasks) -> None:
    """Raise GraftError (one line) for a task named like a run folder's own entry (``model``,
    ``checkpoints``, ``eval``, ``test``): its reports would land in it."""
    taken = [name for name in tasks if name.casefold() in RESERVED_TASK_NAMES]
    if taken:
        raise GraftError(f"task name {taken[0]!r} is taken by the run folder's own {taken[0].casefold()}/ "
                         f"(reserved: {', '.join(RESERVED_TASK_NAMES)}): name the task otherwise")


def continue_run(run: RunDir, saved: dict, *, given: dict, strict: bool = False, progress: bool = True) -> FitResult:
    """Continue a killed or interrupted multi-task run (see :func:`graft.recipes.resume.resume`)."""
    import warnings

    from graft.errors import DataError
    from graft.recipes._run import check_resumable, check_resume_arguments

    start, settings = time.perf_counter(), saved["settings"]
    check_resume_arguments(run.path, settings, given, MultitaskConfig)
    check_resumable(run)
    config = MultitaskConfig.from_dict(settings)  # at this graft's settings version: every field is there
    with warnings.catch_warnings(record=True) as said:  # said once the data is known to be the run's
        warnings.simplefilter("always")
        try:
            splits, scanned = _splits(config)
        except DataError:  # a folder gone or broken: each is scanned again below to say what changed
            splits, scanned = None, None
    problems = _data_changes(run, config, _manifests(scanned) if scanned else None)
    if problems:
        raise GraftError("cannot resume: the data changed since the run started: " + "; ".join(problems))
    if splits is None:
        splits, scanned = _splits(config)  # not a change: the error itself
    for warning in said:
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    plan = _plan(config, splits, strict=strict, progress=progress)
    with run.lock(COMMAND):
        state = load_checkpoint(run.path / "checkpoints" / "last.pt")
        return _train(run, config, plan, progress=progress, resume=state, start=start)


def _data_changes(run: RunDir, c: MultitaskConfig, now: dict | None) -> list[str]:
    """What changed in the task and --val folders since data.json (``now``: their manifests as
    scanned for this resume; None: each is scanned here)."""
    before, problems = read_json(run.path / "data.json"), []
    for name, folder in c.tasks.items():
        problems += _changes(before.get(name), folder, None, now and now[name])
        if name in c.val_dirs and VAL_MANIFESTS in before:  # older runs did not record them
            problems += _changes(before[VAL_MANIFESTS].get(name), c.val_dirs[name],
                                 (before.get(name) or {}).get("classes"), now and now[VAL_MANIFESTS].get(name))
    return problems


# data.json's entry of the tasks' --val folders ({task: manifest}); no task name starts with "-".
VAL_MANIFESTS = "--val"


def _manifests(scanned: dict) -> dict:
    """data.json: every task folder's manifest, and every --val folder's (scored each epoch)."""
    from graft.data.manifest import folder_manifest

    manifests = {name: folder_manifest(folder) for name, folder in scanned.items() if name != VAL_MANIFESTS}
    manifests[VAL_MANIFESTS] = {name: folder_manifest(folder) for name, folder in scanned[VAL_MANIFESTS].items()}
    return manifests


def _changes(before: dict | None, folder: str, classes, now: dict | None = None) -> list[str]:
    """What changed in ``folder`` since its manifest ``before`` (one entry per change); ``now``:
    its manifest as scanned already (else it is scanned here)."""
    from graft.data.manifest import manifest_changes
    from graft.errors import DataError

    if before is None:
        return []
    try:
        now = now if now is not None else manifest_of(folder, classes)
    except DataError as exc:
        return [str(exc)]
    return [f"{folder}: {change}" for change in manifest_changes(before, now)]


def _splits(c: MultitaskConfig) -> tuple[dict, dict]:
    """({task: (train, val)}, {task: its folder as scanned, "--val": {task: its --val folder}}):
    each folder scanned once."""
    splits, scanned = {}, {VAL_MANIFESTS: {}}
    for name, folder in c.tasks.items():
        val_dir = c.val_dirs.get(name)
        train, val = load_train_val(folder, val_dir=val_dir, val_fraction=None if val_dir else c.val_fraction,
                                    seed=c.seed)
        splits[name], scanned[name] = (train, val), whole_folder(train, val, split=not val_dir)
        if val_dir:
            scanned[VAL_MANIFESTS][name] = val
    warn_across_tasks(splits)
    return splits, scanned


def warn_across_tasks(splits: dict) -> None:
    """One warning per pair of tasks where validation images of one are training images of
    another (by content: the same file, a link, a copy): the shared network learnt them, so the
    first task's score is optimistic. (Within a task, :func:`load_train_val` warns.)"""
    import warnings

    from graft.data.overlap import overlaps

    lists = {f"train {name}": train.paths for name, (train, _) in splits.items()}
    lists.update({f"val {name}": val.paths for name, (_, val) in splits.items()})
    for (scored, trained), pairs in overlaps(lists).items():
        scored_task, trained_task = scored.partition(" ")[2], trained.partition(" ")[2]
        if scored.startswith("val ") and trained.startswith("train ") and scored_task != trained_task:
            warnings.warn(f"{len(pairs)} of {len(splits[scored_task][1])} validation image(s) of task {scored_task} "
                          f"are training images of task {trained_task} (same content), e.g. {pairs[0][0]} = "
                          f"{pairs[0][1]}: the shared network learnt them, so {scored_task}'s validation score will "
                          f"be optimistic (give the tasks the same validation images with --val)", stacklevel=2)


@dataclass(frozen=True)
class TaskPlan:
    """A multi-task run's plan, built once before the run folder is opened: the source network
    (its stage plan checked on it), the model, and each task's readable (train, val) images."""

    source: Any
    features: torch.nn.Module
    model: GraftModel
    data: dict
    skipped: tuple


def _plan(c: MultitaskConfig, splits: dict, *, strict: bool, progress: bool) -> TaskPlan:
    """Seeded, so it repeats: the network built once, its stage plan checked, the images
    decode-checked, one head per task."""
    from graft.backbones import create_backbone
    from graft.data.datasets import readable_images
    from graft.train.stages import check_plan

    torch.manual_seed(c.seed)
    np.random.seed(c.seed)
    source = create_backbone(c.backbone, weights=c.weights)
    preprocessing = source.preprocessing.with_size(c.image_size) if c.image_size else source.preprocessing
    features = source.feature_net(None)
    check_plan(parse_stages(c.stages), features.trunk)
    dim = features.output_dim(preprocessing.size)
    data, skipped = {}, []
    for name, (train, val) in splits.items():
        train, bad_train = readable_images(train, strict, progress)
        val, bad_val = readable_images(val, strict, progress)
        data[name], skipped = (train, val), skipped + bad_train + bad_val
    head = MultiTaskHead([{"name": name, "classes": train.classes,
                           "head": make_head(c.head, dim, len(train.classes)).config()}
                          for name, (train, _) in data.items()])
    classes = [f"{name}/{c}" for name, (train, _) in data.items() for c in train.classes]
    training = {"method": COMMAND, **{k: getattr(c, k) for k in ("stages", "head", "lr", "base_lr_factor", "seed",
                                                            "weighting", "task_sampling")}}
    model = GraftModel.from_backbone(source, head, classes, preprocessing=preprocessing, training=training,
                                     features=features)
    return TaskPlan(source, features, model, data, tuple(skipped))


def _train(run: RunDir, c: MultitaskConfig, plan: TaskPlan, *, progress: bool, resume: dict | None,
           start: float) -> FitResult:
    from graft.reporting.plots import training_curves_png

    model, data, head, source = plan.model, plan.data, plan.model.head, plan.source
    result, val_loaders = _fit(run, c, model, source, plan.features, data, progress=progress, resume=resume)
    model.training_info.update({"best_epoch": result.best_epoch, "epochs_run": len(result.history)})
    model.eval().save(run.model_dir)
    per_task = {}
    for name, (train, val) in data.items():
        _, _, _, _, probabilities = evaluate_loader(model, val_loaders[name], with_probabilities=True)
        # evaluate_loader's softmax spans every task's columns; renormalised within this task's it
        # equals the softmax over this task's logits alone
        part = probabilities[:, head.slices[name]]
        part = part / part.sum(axis=1, keepdims=True)
        scored = Scored(val.labels, part.argmax(1), train.classes, part, [record.path for record in val.records])
        metrics = run.write_report(scored, {"n_train": len(train), "n_val": len(val), "data_dir": c.tasks[name]},
                                   subdir=name, title=f"{name} (multi-task)")
        per_task[name] = {k: metrics[k] for k in ("accuracy", "macro_f1", "n_train", "n_val")}
        write_html_safely(run.path, subdir=name)
    summary = {"tasks": per_task, "accuracy": float(np.mean([m["accuracy"] for m in per_task.values()])),
               "macro_f1": float(np.mean([m["macro_f1"] for m in per_task.values()])),
               "best_epoch": result.best_epoch, "resumed_from_epoch": resume["epoch"] if resume else None,
               "seconds": round(time.perf_counter() - start, 3), "skipped": list(plan.skipped)}
    write_atomic(run.path / "metrics.json", json.dumps(summary, indent=1) + "\n")
    training_curves_png(result.history, run.path / "curves.png")
    run.write_config(settings_record(COMMAND, c.to_dict(), tasks={n: t.classes for n, (t, _) in data.items()},
                                     backbone_weights=source.weights_source, image_size=model.preprocessing.size))
    return FitResult(run.path, summary)


def _fit(run: RunDir, c: MultitaskConfig, model: GraftModel, source, features, data: dict, *, progress: bool,
         resume: dict | None):
    """Train every task together; returns (the trainer's result, the validation loaders).

    Head-only stages train on plain images (unless ``augment_head_stage``), so the engine's
    frozen-prefix callback gives each task its pooled features once per stage (ONNX Runtime
    and the on-disk feature cache, as ``graft finetune``) and the epochs run only the heads;
    stages that train the top of the base cache or run their frozen layers in ONNX Runtime."""
    preprocessing = model.preprocessing
    generators = {name: torch.Generator().manual_seed(c.seed + i) for i, name in enumerate(data)}
    plan = parse_stages(c.stages)
    head_augmented = c.augment_head_stage
    augmented = [c.augment != "none" and (stage.top_blocks != 0 or head_augmented) for stage in plan]

    def loaders(augment: str) -> dict:
        return {name: training_loader(ImageDataset(train, preprocessing, augment), train.labels, c.batch_size,
                                      generator=generators[name]) for name, (train, _) in data.items()}

    plain = loaders("none")
    train_loaders = loaders(c.augment) if any(augmented) else plain
    val_loaders = {name: DataLoader(ImageDataset(val, preprocessing, "none"), batch_size=c.batch_size)
                   for name, (_, val) in data.items()}
    method = MultiTask(train_loaders, val_loaders, model.head.slices, weighting=c.weighting,
                       weights=c.task_weights, generators=generators,
                       sampling=c.task_sampling,
                       frozen_statistics=not c.train_statistics)
    loop = LoopSettings(stages=plan, lr=c.lr, base_lr_factor=c.base_lr_factor, optimizer=c.optimizer,
                        weight_decay=c.weight_decay, schedule=c.schedule, progress=progress, augmented=augmented)
    frozen = FrozenPrefix(encode_pooled=pooled_encoder(features, preprocessing, source.architecture,
                                                       c.batch_size, progress))
    callbacks = standard_callbacks(run.path / "checkpoints", run.path / "history.jsonl", frozen_prefix=frozen)
    result = Trainer(loop, callbacks).fit(method, Network(model, features.trunk, model.head),
                                          TrainData(train_loaders, val_loaders, plain), resume=resume)
    return result, val_loaders
