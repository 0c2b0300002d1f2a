"""Commands that train a model into a run folder, generated from the recipes' Configs: fit,
finetune, pretrain, adapt, distill, multitask; and resume, lr-find."""
from __future__ import annotations

import importlib
from pathlib import Path

import click

from graft.cli.options import config_from, config_options, given_settings, run_options
from graft.cli.output import print_result
from graft.recipes import settings as s

_NOT_FINETUNING = ("freeze_first", "regularizer", "regularizer_weight", "transfer_layers", "transfer_from",
                   "freeze_transferred")
# name -> (Config, recipe function, fields the command does not show); each Config's HELP is its --help
TRAINING = {"fit": (s.FrozenFitConfig, "frozen:fit_frozen", ()),
            "finetune": (s.FinetuneConfig, "finetune:finetune", ("pretrained",)),
            "pretrain": (s.PretrainConfig, "pretrain:pretrain", _NOT_FINETUNING[:3] + ("pretrained", "layer_decay")),
            "adapt": (s.AdaptConfig, "adapt:adapt", _NOT_FINETUNING + ("test_dir", "final")),
            "distill": (s.DistillConfig, "distill:distill", _NOT_FINETUNING + ("pretrained",)),
            "multitask": (s.MultitaskConfig, "multitask:multitask", ())}


def _recipe(path: str):
    module, name = path.split(":")
    return getattr(importlib.import_module(f"graft.recipes.{module}"), name)


def _interrupted(run_dir) -> None:
    """Ctrl-C: say whether (and how) the run can continue."""
    from graft.recipes.resume import is_resumable

    if run_dir and is_resumable(run_dir):
        click.echo(f"interrupted: every finished epoch is saved; continue with `graft resume {run_dir}`", err=True)
    else:
        click.echo("interrupted before the first epoch finished: nothing to resume; run the same command again "
                   "to start over", err=True)
    raise SystemExit(130)


def _run(ctx: click.Context, config_cls, recipe: str, params: dict):
    """Start a run of ``recipe`` with the Config built from the options, or --resume one."""
    from graft.recipes.resume import resume

    out, resume_dir = params.pop("out"), params.pop("resume_dir", None)
    strict, progress, overwrite = params.pop("strict"), not params.pop("quiet"), params.pop("overwrite")
    if not out and not resume_dir:
        raise click.UsageError("Missing option '--out' / '-o'" + (" (or --resume RUN_DIR)." if "resume_dir" in
                                                                   ctx.params else "."))
    if resume_dir and (overwrite or (out and Path(out).resolve() != Path(resume_dir).resolve())):
        raise click.UsageError("--resume continues a run in its own folder: choose one of --resume and "
                               "--overwrite / another -o")
    try:
        if resume_dir:
            result = resume(resume_dir, given=given_settings(ctx, config_cls), strict=strict, progress=progress)
        else:
            result = _recipe(recipe)(config_from(config_cls, params), out, strict=strict, progress=progress,
                                     overwrite=overwrite)
    except KeyboardInterrupt:
        _interrupted(resume_dir or out)
    print_result(result)


def _training_command(name: str):
    config_cls, recipe, exclude = TRAINING[name]

    @click.pass_context
    def command(ctx, **params):
        _run(ctx, config_cls, recipe, params)

    command.__doc__ = config_cls.HELP
    return click.command(name)(config_options(config_cls, exclude)(run_options(command, resume=name != "fit")))


@click.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--strict", is_flag=True, help="Stop at the first unreadable image instead of skipping it.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def resume(run_dir, strict, quiet):
    """Continue a killed or interrupted training run (finetune, pretrain, adapt, distill,
    multitask) from its last finished epoch, with its saved settings."""
    from graft.recipes.resume import resume as run_resume

    try:
        print_result(run_resume(run_dir, strict=strict, progress=not quiet))
    except KeyboardInterrupt:
        _interrupted(run_dir)


@click.command("lr-find")
@config_options(s.LRFindConfig, exclude=("lr", "schedule", "mixup", "cutmix", "patience", "test_dir", "final",
                                         "pretrained") + _NOT_FINETUNING)
@(lambda fn: run_options(fn, resume=False))
def lr_find(**params):
    """LR range test: loss vs exponentially growing LR on DATA's training split; plots it to
    OUT/lr_find.png (and .json) and prints the suggested head LR (or use `finetune --lr auto`)."""
    from graft.recipes.lr_find import find_lr

    out = params["out"]
    if not out:
        raise click.UsageError("Missing option '--out' / '-o'.")
    sweep = find_lr(config_from(s.LRFindConfig, params), out, strict=params["strict"], progress=not params["quiet"],
                    overwrite=params["overwrite"])
    stopped = " (loss diverged there)" if sweep.stopped_early else ""
    click.echo(f"swept {sweep.lrs[0]:.2g} .. {sweep.lrs[-1]:.2g} over {len(sweep.lrs)} steps{stopped}")
    click.echo(f"suggested lr {sweep.suggestion:.3g}  (steepest descent; lowest loss at {sweep.min_loss_lr:.3g})")
    click.echo(f"wrote {Path(out) / 'lr_find.png'} {Path(out) / 'lr_find.json'}")


COMMANDS = (*(_training_command(name) for name in TRAINING), resume, lr_find)
