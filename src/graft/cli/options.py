"""Options generated from the recipes' Config dataclasses: a Config is the only place a default
is written; :func:`config_options` turns its fields into click options (flag, type, bounds,
choices, help, default) and :func:`config_from` turns the parsed options back into the Config."""
from __future__ import annotations

import dataclasses

import click

from graft.config import open_ends


class LearningRate(click.ParamType):
    """A positive float, or ``auto`` (an LR range test picks it)."""

    name = "LR|auto"

    def convert(self, value, param, ctx):
        try:
            return value if isinstance(value, float) or value == "auto" else float(value)
        except ValueError:
            self.fail(f"{value!r} is neither a number nor 'auto'", param, ctx)


def _click_type(f: dataclasses.Field):
    meta, kind = f.metadata, str(f.type)
    low, high = meta.get("low"), meta.get("high")
    low_open, high_open = open_ends(meta)
    if meta.get("lr") or "choices" in meta or meta.get("path"):
        return LearningRate() if meta.get("lr") else click.Choice(list(meta["choices"])) if "choices" in meta \
            else click.Path()
    if kind.startswith("int"):
        return click.IntRange(low, high) if low is not None or high is not None else int
    if kind.startswith("float"):
        return float if low is None and high is None else click.FloatRange(low, high, min_open=low_open,
                                                                           max_open=high_open and high is not None)
    return str


def field_option(f: dataclasses.Field):
    """One field's parameter: an argument, a flag (a bool that is on by default gets the field's
    ``flag`` that turns it off), a repeatable NAME=VALUE option (a dict) or a valued option."""
    meta, kind, text = f.metadata, str(f.type), f.metadata.get("help", "")
    if meta.get("argument"):
        many = kind.startswith("dict")
        return click.argument(f.name, metavar=meta["argument"].upper(), nargs=-1 if many else 1, required=False,
                              type=None if many else click.Path())  # --resume needs none; the Config says if missing
    names = [meta.get("flag") or "--" + f.name.replace("_", "-"), f.name] + ([meta["short"]] if "short" in meta else [])
    if kind == "bool":
        return click.option(*names, is_flag=True, flag_value=not f.default, default=f.default, help=text)
    if kind.startswith("dict"):
        return click.option(*names, multiple=True, help=text)
    return click.option(*names, type=_click_type(f), default=f.default, show_default=f.default is not None, help=text)


def config_options(config, exclude: tuple[str, ...] = (), only: tuple[str, ...] | None = None):
    """Decorator: an option for every shown field of ``config`` (not ``hidden``, not in
    ``exclude`` nor in the Config's ``REFUSED``; or just ``only``), in field order."""
    exclude = tuple(exclude) + tuple(getattr(config, "REFUSED", ()))
    chosen = [f for f in dataclasses.fields(config) if not f.metadata.get("hidden") and f.name not in exclude
              and (only is None or f.name in only)]

    def decorate(fn):
        for f in reversed(chosen):
            fn = field_option(f)(fn)
        return fn

    return decorate


def config_from(config, params: dict, **overrides):
    """The Config from parsed click parameters (the fields among them) and ``overrides``."""
    names = {f.name for f in dataclasses.fields(config)}
    return config(**{**{k: v for k, v in params.items() if k in names}, **overrides})


def given_settings(ctx: click.Context, config) -> dict:
    """The Config fields the user typed (not defaults), for --resume checks."""
    from click.core import ParameterSource

    names = {f.name for f in dataclasses.fields(config)}
    typed = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    return {k: v for k, v in ctx.params.items() if k in names and ctx.get_parameter_source(k) in typed}


quiet = click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
as_json = click.option("--json", "as_json", is_flag=True, help="JSON instead of text.")
on_ray = click.option("--ray", type=click.IntRange(1), default=None, metavar="N",
                      help="Spread the images over N Ray actors, one ONNX Runtime session each: on the cluster at "
                           "$RAY_ADDRESS, else a local one of N CPUs (pip install 'graft-vision[ray]').")


def quiet_strict(fn):
    return click.option("--strict", is_flag=True, help="Stop at the first unreadable image instead of skipping it.")(
        quiet(fn))


def data_options(fn):
    """How images are read and run (frozen engine, batch size, cache), --strict, --quiet."""
    from graft.recipes.settings import FrozenFitConfig

    return config_options(FrozenFitConfig, only=("engine", "batch_size", "cache"))(quiet_strict(fn))


def run_options(fn, resume: bool = True):
    """-o/--out, --overwrite, --strict, --quiet (and --resume) of every training command."""
    fn = quiet_strict(fn)
    if resume:
        fn = click.option("--resume", "resume_dir", type=click.Path(file_okay=False), default=None,
                          help="Continue this killed or interrupted run with its saved settings (as `graft resume`; "
                               "repeating a setting with another value is an error).")(fn)
    fn = click.option("--overwrite", is_flag=True, help="Write into a non-empty -o folder: graft's own outputs "
                                                        "there are removed first, other files are kept.")(fn)
    return click.option("--out", "-o", type=click.Path(file_okay=False), default=None,
                        help="Run folder to write (new, empty, or an earlier run of the same command).")(fn)


def echo_summary(directory, metrics: dict, scored_on: str | None = None) -> None:
    """A run's summary (graft.reporting.summary); nothing for a non-zero rank under torchrun."""
    from graft.reporting.summary import training_summary

    if metrics:
        click.echo(training_summary(directory, metrics, scored_on))
