"""Commands that train a model into a run folder: fit, finetune, pretrain, adapt, distill,
multitask, lr-find, resume. Their options come from the recipes' Config dataclasses."""
from __future__ import annotations

from pathlib import Path

import click

from graft.cli.options import config_from, config_options, given_settings, run_options
from graft.cli.output import print_summary, print_tasks
from graft.errors import GraftError
from graft.recipes.settings import (AdaptConfig, DistillConfig, FinetuneConfig, FrozenFitConfig, LRFindConfig,
                                    MultitaskConfig, PretrainConfig)


def _options(config, exclude=(), resume=True):  # noqa: D103
    def decorate(fn):
        return config_options(config, exclude)(run_options(fn, resume=resume))
    return decorate


def _require_out(out, resume_dir, overwrite):
    if not out and not resume_dir:
        raise click.UsageError("Missing option '--out' / '-o' (or --resume RUN_DIR).")
    if resume_dir and overwrite:
        raise click.UsageError("--resume continues a run, --overwrite starts one over: choose one")
    if resume_dir and out and Path(out).resolve() != Path(resume_dir).resolve():
        raise click.UsageError(f"--resume {resume_dir} writes into that run folder; -o {out} names another")


def _interrupted(run_dir) -> None:
    """Ctrl-C: say whether (and how) the run can continue."""
    from graft.recipes.resume import is_resumable

    if run_dir and is_resumable(run_dir):
        click.echo(f"interrupted: every finished epoch is saved; continue with `graft resume {run_dir}`", err=True)
    else:
        click.echo("interrupted before the first epoch finished: nothing to resume; run the same command again "
                   "to start over", err=True)
    raise SystemExit(130)


def _train(ctx, config_cls, recipe, params, scored_on="validation", summary=print_summary, **overrides):
    """Resume (--resume) or start a run of ``recipe`` with the Config built from the options."""
    from graft.recipes.resume import resume

    out, resume_dir, overwrite = params["out"], params["resume_dir"], params["overwrite"]
    _require_out(out, resume_dir, overwrite)
    progress = not params["quiet"]
    try:
        if resume_dir:
            result = resume(resume_dir, given=given_settings(ctx, config_cls), strict=params["strict"],
                            progress=progress)
        else:
            config = config_from(config_cls, params, **overrides)
            result = recipe(config, out, strict=params["strict"], progress=progress, overwrite=overwrite)
    except KeyboardInterrupt:
        _interrupted(resume_dir or out)
    if result.metrics:  # a non-zero rank under torchrun has none: rank 0 reports
        summary(result.run_dir, result.metrics, scored_on=scored_on)
    return result


@click.command()
@_options(FrozenFitConfig, resume=False)
@click.option("--no-cache", is_flag=True, help="Do not read or write the feature cache.")
def fit(**params):
    """Frozen features + a classical head (C chosen by cross-validation) -> a run folder."""
    from graft.recipes.frozen import fit_frozen

    if not params["out"]:
        raise click.UsageError("Missing option '--out' / '-o'.")
    config = config_from(FrozenFitConfig, params, cache=not params["no_cache"])
    result = fit_frozen(config, params["out"], strict=params["strict"], progress=not params["quiet"],
                        overwrite=params["overwrite"])
    print_summary(result.run_dir, result.metrics)


@click.command()
@_options(FinetuneConfig)
@click.option("--no-augment", is_flag=True, help="Same as --augment none.")
@click.pass_context
def finetune(ctx, no_augment, **params):
    """Fine-tune: new head on the frozen base, then unfreeze more with a smaller LR.

    Checkpoints are written every epoch; after a kill or Ctrl-C, `graft resume RUN_DIR` (or this
    command with --resume RUN_DIR) continues where it stopped.
    """
    from graft.recipes.finetune import finetune as run_finetune

    if no_augment and params["augment"] not in ("none", "crop-flip"):
        raise click.UsageError(f"--no-augment contradicts --augment {params['augment']}")
    if no_augment:
        params["augment"] = "none"
        ctx.params["augment"] = "none"
    result = _train(ctx, FinetuneConfig, run_finetune, params)
    if result.metrics:
        click.echo(f"history: {result.run_dir / 'history.jsonl'}  curves: {result.run_dir / 'curves.png'}")


@click.command()
@_options(PretrainConfig, exclude=("freeze_first", "regularizer", "regularizer_weight", "layer_decay"))
@click.pass_context
def pretrain(ctx, **params):
    """Train a network from random initialisation on a labelled source folder; the run folder is
    then a backbone for every other command (--backbone RUN_DIR)."""
    from graft.recipes.pretrain import pretrain as run_pretrain

    _train(ctx, PretrainConfig, run_pretrain, params)


@click.command()
@_options(AdaptConfig, exclude=("freeze_first", "regularizer", "regularizer_weight", "test_dir", "final",
                                "transfer_layers", "transfer_from", "freeze_transferred"))
@click.option("--from-scratch", is_flag=True, help="Random initial weights instead of pretrained ones.")
@click.pass_context
def adapt(ctx, from_scratch, **params):
    """Domain adaptation: learn from a labelled --source folder and unlabelled --target images
    (DANN by default; --adversary none is source-only: the target never enters the network)."""
    from graft.recipes.adapt import adapt as run_adapt

    if not params["resume_dir"]:
        missing = [flag for flag, key in (("--source", "train_dir"), ("--target", "target_dir"), ("--out", "out"))
                   if not params[key]]
        if missing:
            raise click.UsageError(f"missing {', '.join(missing)} (or --resume RUN_DIR)")
    result = _train(ctx, AdaptConfig, run_adapt, params, scored_on="source validation",
                    pretrained=not from_scratch)
    target = result.metrics.get("target")
    if target:
        click.echo(f"target ({target['data_dir']}): accuracy {100 * target['accuracy']:.1f} %  "
                   f"macro F1 {target['macro_f1']:.3f}")
    for key in ("proxy_a_distance_before", "proxy_a_distance_after"):
        if key in result.metrics:
            click.echo(f"{key.replace('_', ' ')}: {result.metrics[key]:.3f}")


@click.command()
@_options(DistillConfig, exclude=("regularizer", "regularizer_weight", "transfer_layers", "transfer_from",
                                  "freeze_transferred"))
@click.pass_context
def distill(ctx, **params):
    """Teacher-student: train --student on DATA from a graft run's softened outputs and the labels."""
    from graft.recipes.distill import distill as run_distill

    _train(ctx, DistillConfig, run_distill, params)


@click.command()
@_options(MultitaskConfig)
@click.pass_context
def multitask(ctx, **params):
    """One shared network, one head per task: graft multitask flowers=DIR insects=DIR -o RUN."""
    from graft.recipes.multitask import multitask as run_multitask
    from graft.recipes.multitask import parse_tasks

    if not params["resume_dir"]:
        params["tasks"] = parse_tasks(params["tasks"])
        params["val_dirs"] = parse_tasks(params["val_dirs"], "--val")
        weights = {}
        for name, value in parse_tasks(params["task_weights"], "--task-weight").items():
            try:
                weights[name] = float(value)
            except ValueError:
                raise click.UsageError(f"--task-weight {name}={value}: not a number") from None
        params["task_weights"] = weights
    _train(ctx, MultitaskConfig, run_multitask, params, summary=print_tasks)


@click.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--strict", is_flag=True, help="Stop at the first unreadable image instead of skipping it.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def resume(run_dir, strict, quiet):
    """Continue a killed or interrupted training run (finetune, pretrain, adapt, distill,
    multitask) from its last finished epoch, with its saved settings."""
    from graft.recipes.resume import resume as run_resume

    try:
        result = run_resume(run_dir, strict=strict, progress=not quiet)
    except KeyboardInterrupt:
        _interrupted(run_dir)
    if result.metrics:
        (print_tasks if "tasks" in result.metrics else print_summary)(result.run_dir, result.metrics)


@click.command("lr-find")
@_options(LRFindConfig, resume=False, exclude=("freeze_first", "lr", "schedule", "mixup", "cutmix", "regularizer",
                                                "regularizer_weight", "patience", "class_weight", "sampler",
                                                "test_dir", "final", "transfer_layers", "transfer_from",
                                                "freeze_transferred"))
def lr_find(**params):
    """LR range test: loss vs exponentially growing LR on DATA's training split; plots it.

    Writes OUT/lr_find.png and OUT/lr_find.json and prints the suggested head LR (pass it to
    `graft finetune --lr`, or use `--lr auto` there).
    """
    from graft.recipes.lr_find import find_lr

    out = params["out"]
    if not out:
        raise click.UsageError("Missing option '--out' / '-o'.")
    config = config_from(LRFindConfig, params)
    sweep = find_lr(config, out, strict=params["strict"], progress=not params["quiet"], overwrite=params["overwrite"])
    stopped = " (loss diverged there)" if sweep.stopped_early else ""
    click.echo(f"swept {sweep.lrs[0]:.2g} .. {sweep.lrs[-1]:.2g} over {len(sweep.lrs)} steps{stopped}")
    click.echo(f"suggested lr {sweep.suggestion:.3g}  (steepest descent; lowest loss at {sweep.min_loss_lr:.3g})")
    click.echo(f"wrote {Path(out) / 'lr_find.png'} {Path(out) / 'lr_find.json'}")


COMMANDS = (fit, finetune, pretrain, adapt, distill, multitask, resume, lr_find)
__all__ = ["COMMANDS", "GraftError"]
