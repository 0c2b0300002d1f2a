"""Executing a network-training recipe's run plan (:mod:`graft.recipes._run_plan`): every
check passes while the plan is built, then the run folder is opened, the
:class:`~graft.train.trainer.Trainer` trains the plan's network with its method, and the model
and reports are written. A recipe (finetune, pretrain, adapt, distill) brings only its
:class:`~graft.recipes._run_plan.NetworkRecipe`."""
from __future__ import annotations

import contextlib
import time
from dataclasses import replace

from graft.artifacts.novelty import record_novelty_of_network
from graft.artifacts.run_folder import RunDir, open_run, write_html_safely
from graft.data.datasets import readable_images
from graft.errors import DataError, GraftError
from graft.methods import evaluate_loader
from graft.recipes._lr_sweep import auto_lr, saved_settings
from graft.recipes._run import (
    MANIFEST_PARTS,
    FitResult,
    check_data_unchanged,
    check_not_an_input,
    check_resumable,
    check_resume_arguments,
    init_distributed,
    score_folder,
    write_manifest,
)
from graft.recipes._run_plan import NetworkRecipe, RunData, TrainingPlan, build_plan, check_mixing, load_run_data
from graft.recipes.settings import FinetuneConfig
from graft.recipes.settings.versions import settings_record
from graft.reporting.metrics import Scored
from graft.reporting.plots import training_curves_png
from graft.reporting.summary import validation_title
from graft.train.callbacks import load_checkpoint, standard_callbacks
from graft.train.distributed import is_main_process
from graft.train.stages import truncated_plan
from graft.train.trainer import Network, TrainData, Trainer


def _fit(plan: TrainingPlan, callbacks, resume=None):
    network = Network(plan.model, plan.features.trunk, plan.head)
    data = TrainData(plan.train_loader, plan.val_loader, plan.plain_loader, plan.generator)
    return Trainer(plan.loop, callbacks).fit(plan.method, network, data, resume=resume)


def start_training(config: FinetuneConfig, out, recipe: NetworkRecipe, *, strict: bool, progress: bool,
                   overwrite: bool) -> FitResult:
    """Build the run plan (every check: settings, data, test folder, network), then open the
    run folder and execute it."""
    start = time.perf_counter()
    data = load_run_data(config, recipe)  # data problems are reported before the run folder is touched
    if recipe.configure is not None:
        config = recipe.configure(config, data)
    check_mixing(config)
    check_not_an_input(out, config)
    distributed = init_distributed()
    main = is_main_process()
    plan = build_plan(config, recipe, data, strict=strict, progress=progress and main, distributed=distributed)
    run = open_run(out, config.COMMAND, overwrite=overwrite) if main else RunDir(out)
    with run.lock(config.COMMAND) if main else contextlib.nullcontext():
        if main:
            run.write_config(settings_record(config.COMMAND, config.to_dict()))
            write_manifest(run, data.manifests())
        return execute(run, plan, strict=strict, progress=progress and main, resume=None, distributed=distributed,
                       start=start)


# Settings every training run has saved since the first version: one missing means a damaged file.
SAVED_SINCE_THE_FIRST_RUN = ("train_dir", "backbone", "stages", "augment", "seed")


def continue_training(run: RunDir, saved: dict, config_cls, recipe: NetworkRecipe, *, given: dict, strict: bool,
                      progress: bool) -> FitResult:
    """Continue a killed or interrupted run from ``RUN/checkpoints/last.pt`` with its saved
    settings (see :func:`graft.recipes.resume.resume`)."""
    start = time.perf_counter()
    where, missing = run.path / "config.yaml", [k for k in SAVED_SINCE_THE_FIRST_RUN if k not in saved["settings"]]
    if missing:  # a cut file can still parse: what every run has saved must be there
        raise GraftError(f"{where} lacks {', '.join(missing)}: the file is cut short or was edited")
    settings = saved["settings"]  # at this graft's settings version (read_saved upgraded an older run's)
    check_resume_arguments(run.path, settings, given, config_cls)
    check_resumable(run)
    lr_found = settings.get("lr_found")  # a resumed run keeps the LR its sweep chose
    try:
        config = config_cls.from_dict(settings)
    except GraftError as exc:  # saved settings a new run would refuse: the file was cut short or edited
        raise GraftError(f"{where}: {exc}") from None
    data = _data_as_saved(run, config, recipe)
    state = load_checkpoint(run.path / "checkpoints" / "last.pt")
    distributed = init_distributed()
    main = is_main_process()
    plan = build_plan(config, recipe, data, strict=strict, progress=progress and main, distributed=distributed)
    with run.lock(saved["command"]) if main else contextlib.nullcontext():
        return execute(run, plan, strict=strict, progress=progress and main, resume=state, distributed=distributed,
                       lr_found=lr_found, start=start)


def _data_as_saved(run: RunDir, config: FinetuneConfig, recipe: NetworkRecipe) -> RunData:
    """The run's data, scanned once and compared with RUN/data.json before any of its warnings
    is said (they are held, :class:`RunData`): files gone, added or rewritten, or a class added
    since the run started, are one GraftError listing them (the split or the images would differ)."""
    roots = {part: getattr(config, key, None) for part, key in MANIFEST_PARTS.items()}
    try:
        data = load_run_data(config, recipe)
    except DataError:
        check_data_unchanged(run.path, roots)  # a folder gone or broken: a change when data.json lists it
        raise
    check_data_unchanged(run.path, roots, data.manifests())
    return data


def execute(run: RunDir, plan: TrainingPlan, *, strict: bool, progress: bool, resume: dict | None,
            distributed: bool = False, lr_found: float | None = None, start: float | None = None) -> FitResult:
    """Train the plan (resuming from ``resume``), optionally refit (``final``), then write the
    model, metrics.json, reports, curves and config.yaml into ``run``."""
    start = time.perf_counter() if start is None else start
    config, recipe = plan.config, plan.recipe
    if config.lr == "auto":
        lr_found = lr_found if lr_found is not None else auto_lr(run, plan, plan.method, progress, distributed)
        plan = replace(plan, loop=replace(plan.loop, lr=lr_found))
        plan.model.training_info["lr"] = lr_found
    if is_main_process() and resume is None and config.pretrained and not config.transfer_layers:
        _warn_near_copies(plan, progress)
    if recipe.before and is_main_process() and resume is None:
        recipe.before(run, plan)
    callbacks = standard_callbacks(run.path / "checkpoints", run.path / "history.jsonl", patience=config.patience,
                                   keep_last=recipe.keep_last, frozen_prefix=plan.frozen_prefix,
                                   monitor=config.monitor, mode=config.mode)
    result = _fit(plan, callbacks, resume)
    # best_epoch: the epoch whose weights the model holds (the last one when the recipe keeps it)
    kept = {"best_epoch": result.kept_epoch,
            "epoch_kept_by": "last epoch" if recipe.keep_last else KEPT_BY.get(config.monitor, config.monitor)}
    plan.model.training_info.update({**kept, "epochs_run": len(result.history)})
    plan.model.eval()
    shipped = _final_refit(run, plan, result.best_epoch, progress, distributed) if config.final else plan.model
    if not is_main_process():  # rank 0 writes the model and reports
        return FitResult(run.path, {})
    record_novelty_of_network(run.model_dir, shipped, plan.plain_loader, plan.val_loader)
    shipped.save(run.model_dir)
    extra = {"n_train": len(plan.train), "n_val": len(plan.val), **kept,
             "final_refit": config.final, "resumed_from_epoch": resume["epoch"] if resume else None,
             "lr": plan.loop.lr, "skipped": list(plan.skipped)}
    extra.update(_held_out_results(run, plan, shipped, strict, progress))
    metrics = _write_reports(run, plan, result.history, extra, start)
    run.write_config(settings_record(config.COMMAND, saved_settings(config, lr_found), classes=plan.train.classes,
                                     backbone_weights=plan.source.weights_source, image_size=plan.preprocessing.size))
    write_html_safely(run.path)
    return FitResult(run.path, metrics)


def _warn_near_copies(plan: TrainingPlan, progress: bool) -> None:
    """Warn when validation holds a near copy of a training image, on the source network's
    pooled features (the on-disk cache the frozen prefix reads too: a head stage first reuses them)."""
    from graft.curation.copies import warn_near_copies
    from graft.features.extractor import FeatureExtractor

    extractor = FeatureExtractor.from_network(plan.features, plan.preprocessing, plan.source.architecture,
                                              batch_size=plan.config.batch_size, progress=progress)
    warn_near_copies({name: extractor.extract([record.path for record in folder.records], desc=f"near copies ({name})")
                      for name, folder in (("train", plan.train), ("val", plan.val))})


def _held_out_results(run: RunDir, plan: TrainingPlan, model, strict: bool, progress: bool) -> dict:
    """The test folder (scanned and checked with the plan) scored once, with the epoch
    validation chose; the recipe's own results."""
    c, extra, test = plan.config, {}, plan.data.test
    if test is not None:
        test, skipped = readable_images(test, strict, progress)
        extra["test"] = score_folder(run, model, test, subdir="test", title=f"{test.root.name} (test)",
                                     batch_size=c.batch_size, extra={"n_test": len(test), "skipped": skipped})
    if plan.recipe.results:
        extra.update(plan.recipe.results(run, plan, model))
    return extra


def _write_reports(run: RunDir, plan: TrainingPlan, history: list[dict], extra: dict, start: float) -> dict:
    _, _, y_true, y_pred, probabilities = evaluate_loader(plan.model, plan.val_loader, with_probabilities=True)
    extra["seconds"] = round(time.perf_counter() - start, 3)
    scored = Scored(y_true, y_pred, plan.train.classes, probabilities, [record.path for record in plan.val.records])
    metrics = run.write_report(scored, extra, title=validation_title(plan.val.root, plan.train.root, "fine-tuned"))
    training_curves_png(history, run.path / "curves.png")
    run.write_split(plan.train, plan.val)
    return metrics


# what graft.json's training record says picked the kept epoch, per --monitor
KEPT_BY = {"val_accuracy": "validation accuracy", "val_loss": "validation loss"}


def _final_refit(run: RunDir, plan: TrainingPlan, best_epoch: int, progress: bool, distributed: bool):
    """``--final``: train again from the source weights on training + validation images for the
    epochs validation chose (the plan cut at the best epoch), keeping the last epoch. The
    validation scores stay those of the first run; this model has no held-out set left. The
    images are the plan's (scanned and checked once)."""
    final = plan.config.replace(stages=truncated_plan(plan.plan, max(best_epoch, 1)), patience=None,
                                lr=plan.loop.lr)
    again = build_plan(final, plan.recipe, plan.data, strict=False, progress=progress, distributed=distributed,
                       final_pass=True, readable=(plan.train, plan.val, plan.own, plan.skipped))
    callbacks = standard_callbacks(run.path / "checkpoints" / "final", run.path / "history-final.jsonl",
                                   keep_last=True, frozen_prefix=again.frozen_prefix)
    result = _fit(again, callbacks)
    again.model.training_info.update({"final_refit": True, "final_plan": final.stages, "best_epoch": result.kept_epoch,
                                      "epoch_kept_by": "last epoch", "epochs_run": len(result.history),
                                      "n_fitted": len(again.train)})
    return again.model.eval()
