"""The commands of the recipe registry (graft.recipes.registry), generated from their Configs:
fit, finetune, pretrain, adapt, distill, multitask, lr-find, audit, zeroshot, cluster, select;
and resume."""
from __future__ import annotations

from pathlib import Path

import click

from graft.cli.options import config_from, config_options, echo_summary, given_settings, quiet_strict, run_options
from graft.recipes.registry import Recipe, recipes


def _interrupted(run_dir) -> None:
    from graft.recipes.resume import interrupted_hint

    click.echo(interrupted_hint(run_dir), err=True)
    raise SystemExit(130)


def _run(ctx: click.Context, recipe: Recipe, params: dict):
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
            result = resume(resume_dir, given=given_settings(ctx, recipe.config), strict=strict, progress=progress)
        else:
            result = recipe.run(config_from(recipe.config, params), out, strict=strict, progress=progress,
                                overwrite=overwrite)
    except KeyboardInterrupt:
        _interrupted(resume_dir or out)
    if hasattr(result, "suggestion"):  # lr-find's sweep
        click.echo(f"{result.text()}\nwrote {Path(out) / 'lr_find.png'} {Path(out) / 'lr_find.json'}")
    else:
        echo_summary(result.run_dir, result.metrics)


def _command(recipe: Recipe):
    @click.pass_context
    def command(ctx, **params):
        _run(ctx, recipe, params)

    command.__doc__ = recipe.config.HELP
    options = config_options(recipe.config, recipe.config.CLI_HIDDEN)
    return click.command(recipe.command)(options(run_options(command, resume=recipe.resume is not None)))


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


COMMANDS = (*map(_command, recipes()), resume)
