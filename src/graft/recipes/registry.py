"""The recipe registry: every command that writes a run folder, with its Config, the function
that runs it and the one that continues a killed run (as timm's ``register_model`` lists
models). The CLI generates its commands from it, ``graft resume`` dispatches through it, and
the public names of :mod:`graft` (recipe functions and Configs) are read from it.

An entry names its functions as ``"module:function"`` of :mod:`graft.recipes`, imported on
first use: reading the registry (``graft --help``, ``graft predict``) imports no recipe and
no torch. A recipe outside graft registers with the decorator::

    @register_recipe(MyConfig, resume=continue_mine)
    def mine(config, out, *, strict=False, progress=True, overwrite=False): ...
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, Union

from graft.errors import GraftError
from graft.recipes import settings as s

Function = Union[str, Callable]  # a callable, or "module:function" of graft.recipes


@dataclass(frozen=True)
class Recipe:
    """One command. ``config``: its Config dataclass (``COMMAND``, ``HELP``, the options and
    their defaults). ``function(config, out, *, strict, progress, overwrite)`` runs it and
    returns a :class:`~graft.recipes._run.FitResult` (``lr-find``: the sweep);
    ``resume(run, saved, *, given, strict, progress)`` continues a killed run (None: the
    command's runs are not resumable). ``public``: the function and the Config are names of
    the :mod:`graft` package."""

    config: type
    function: Function
    resume: Function | None = None
    public: bool = True

    @property
    def command(self) -> str:
        return self.config.COMMAND

    @property
    def name(self) -> str:
        """The function's name (``graft.<name>`` when ``public``)."""
        return self.function.rpartition(":")[2] if isinstance(self.function, str) else self.function.__name__

    @property
    def module(self) -> str:
        """The module that defines the function."""
        if isinstance(self.function, str):
            return f"graft.recipes.{self.function.partition(':')[0]}"
        return self.function.__module__

    def run(self, config, out, **options):
        """Run the recipe on ``config`` (an instance of :attr:`config`) into ``out``."""
        return _load(self.function)(config, out, **options)

    def continue_run(self, run, saved: dict, **options):
        """Continue the killed run ``run`` (a RunDir) from its config.yaml ``saved``."""
        if self.resume is None:
            raise GraftError(f"graft {self.command} runs cannot be resumed")
        return _load(self.resume)(run, saved, **options)


def _load(function: Function) -> Callable:
    if callable(function):
        return function
    module, _, name = function.partition(":")
    return getattr(importlib.import_module(f"graft.recipes.{module}"), name)


_RECIPES: dict[str, Recipe] = {}


def register_recipe(config, function: Function | None = None, *, resume: Function | None = None,
                    public: bool = True):
    """Add the recipe of ``config.COMMAND`` (see :class:`Recipe`). Without ``function``, a
    decorator for it. Raises GraftError when another recipe has the command."""
    def add(fn):
        if config.COMMAND in _RECIPES:
            raise GraftError(f"a recipe for graft {config.COMMAND} is registered already")
        _RECIPES[config.COMMAND] = Recipe(config, fn, resume, public)
        return fn

    return add if function is None else add(function)


def recipe(command: str) -> Recipe:
    """The recipe of ``command``; GraftError naming the registered ones when there is none."""
    if command not in _RECIPES:
        raise GraftError(f"no recipe for {command!r}; registered: {', '.join(_RECIPES)}")
    return _RECIPES[command]


def recipes() -> tuple[Recipe, ...]:
    """Every registered recipe, in registration order."""
    return tuple(_RECIPES.values())


def resumable_commands() -> tuple[str, ...]:
    """The commands whose killed runs ``graft resume`` continues."""
    return tuple(r.command for r in _RECIPES.values() if r.resume is not None)


# graft's own recipes. Training a network: resumable from the last finished epoch.
register_recipe(s.FrozenFitConfig, "frozen:fit_frozen")
register_recipe(s.FinetuneConfig, "finetune:finetune", resume="finetune:continue_run")
register_recipe(s.PretrainConfig, "pretrain:pretrain", resume="pretrain:continue_run")
register_recipe(s.AdaptConfig, "adapt:adapt", resume="adapt:continue_run")
register_recipe(s.DistillConfig, "distill:distill", resume="distill:continue_run")
register_recipe(s.MultitaskConfig, "multitask:multitask", resume="multitask:continue_run")
register_recipe(s.LRFindConfig, "lr_find:find_lr")
# On the cached features of unlabelled or unchecked images (issue 25).
register_recipe(s.AuditConfig, "audit:audit", public=False)
register_recipe(s.ZeroshotConfig, "zeroshot:zeroshot", public=False)
register_recipe(s.ClusterConfig, "cluster:cluster")
register_recipe(s.SelectConfig, "select:select")
