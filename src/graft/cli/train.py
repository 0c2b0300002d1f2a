"""Commands that train a model into a run folder, generated from the recipes' Configs: fit,
finetune, pretrain, adapt, distill, multitask; and resume, lr-find."""
from __future__ import annotations

import importlib
from pathlib import Path

import click

from graft.cli.options import config_from, config_options, echo_summary, given_settings, quiet_strict, run_options
from graft.recipes import settings as s

# each Config holds its command's name, help, hidden fields and recipe function
TRAINING = (s.FrozenFitConfig, s.FinetuneConfig, s.PretrainConfig, s.AdaptConfig, s.DistillConfig, s.MultitaskConfig)
# commands on the cached features of unlabelled or unchecked images (issue 25): same contract, no resume
BEFORE_LABELS: tuple = (s.AuditConfig, s.ZeroshotConfig, s.ClusterConfig, s.SelectConfig)


def _interrupted(run_dir) -> None:
    from graft.recipes.resume import interrupted_hint

    click.echo(interrupted_hint(run_dir), err=True)
    raise SystemExit(130)


def _run(ctx: click.Context, config_cls, params: dict):
    """Start a run of ``recipe`` with the Config built from the options, or --resume one."""
    from graft.recipes.resume import resume

    out, resume_dir = params.pop("out"), params.pop("resume_dir", None)
    strict, progress, overwrite = params.pop("strict"), not params.pop("quiet"), params.pop("overwrite")
    if not out and not resume_dir:
        raise click.UsageError("Missing option '--out' / '-o'.")
    if resume_dir and (overwrite or (out and Path(out).resolve() != Path(resume_dir).resolve())):
        raise click.UsageError("--resume continues a run in its own folder: choose one of it and --overwrite / -o")
    try:
        if resume_dir:
            result = resume(resume_dir, given=given_settings(ctx, config_cls), strict=strict, progress=progress)
        else:
            module, function = config_cls.RECIPE.split(":")
            recipe = getattr(importlib.import_module(f"graft.recipes.{module}"), function)
            result = recipe(config_from(config_cls, params), out, strict=strict, progress=progress, overwrite=overwrite)
    except KeyboardInterrupt:
        _interrupted(resume_dir or out)
    echo_summary(result.run_dir, result.metrics)


def _training_command(config_cls):
    @click.pass_context
    def command(ctx, **params):
        _run(ctx, config_cls, params)

    command.__doc__ = config_cls.HELP
    options = config_options(config_cls, config_cls.CLI_HIDDEN)
    resumable = getattr(config_cls, "RESUMABLE", config_cls.COMMAND != "fit")
    return click.command(config_cls.COMMAND)(options(run_options(command, resume=resumable)))


@click.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@quiet_strict
def resume(run_dir, strict, quiet):
    """Continue a killed or interrupted training run (finetune, pretrain, adapt, distill,
    multitask) from its last finished epoch, with its saved settings."""
    from graft.recipes.resume import resume as run_resume

    try:
        result = run_resume(run_dir, strict=strict, progress=not quiet)
    except KeyboardInterrupt:
        _interrupted(run_dir)
    echo_summary(result.run_dir, result.metrics)


@click.command("lr-find")
@config_options(s.LRFindConfig, s.LRFindConfig.CLI_HIDDEN)
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
    click.echo(f"{sweep.text()}\nwrote {Path(out) / 'lr_find.png'} {Path(out) / 'lr_find.json'}")


COMMANDS = (*map(_training_command, TRAINING + BEFORE_LABELS), resume, lr_find)
