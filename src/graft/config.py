"""The machinery of typed settings (the recipes', the server's): :class:`Config` (validation on construction, the
config.yaml schema) and :func:`setting` (a field with its command-line description). The
settings themselves are in :mod:`graft.recipes.settings`."""
from __future__ import annotations

import dataclasses
import inspect
import math
import re
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import ClassVar

from graft.errors import GraftError


def setting(default, help: str = "", **cli):
    """A config field with its command-line description: ``help``, and optionally ``flag``
    (the option's name, default ``--field-name``), ``short``, ``choices``, ``low``/``high``
    (bounds; ``open`` True, "low" or "high" excludes them), ``path`` (a file or folder), ``lr`` (a number or
    'auto'), ``argument`` (positional), ``hidden`` (library only)."""
    factory = isinstance(default, (dict, list))
    metadata = {"help": help, **cli}
    if factory:
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def open_ends(meta) -> tuple[bool, bool]:
    """(low bound excluded, high bound excluded) of a field's ``open`` (True, "low" or "high")."""
    open_ = meta.get("open", False)
    return open_ in (True, "low"), open_ in (True, "high")


def absolute_path(value):
    return str(Path(value).expanduser().resolve()) if value else value


@dataclass
class Config:
    """Base of every recipe's settings."""

    # Path settings made absolute, so a saved run does not depend on the working folder.
    PATHS: ClassVar[tuple[str, ...]] = ()
    # Fields the command built from this Config does not show (library only).
    CLI_HIDDEN: ClassVar[tuple[str, ...]] = ()
    # Fields this command's method does not use: its command line does not show them, and a value
    # other than the default is refused (an option accepted and then ignored misleads).
    REFUSED: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self):
        for name in self.PATHS:
            setattr(self, name, absolute_path(getattr(self, name)))
        self.validate()

    def validate(self) -> None:
        """Raise GraftError for a value no run can use (checked before anything is written): a
        value outside a field's ``choices`` or ``low``/``high`` bounds, and a float that is NaN
        or infinite (no bound catches NaN: it compares false with everything)."""
        for f in fields(self):
            value, meta = getattr(self, f.name), f.metadata
            if f.name in self.REFUSED and value != f.default:
                raise GraftError(f"{getattr(self, 'COMMAND', 'this command')} does not use {self.flag(f.name)} "
                                 f"(its method ignores it), got {value!r}: leave it out")
            if value is None:
                continue
            if "choices" in meta and value not in meta["choices"]:
                raise GraftError(f"{self.flag(f.name)} must be one of {', '.join(meta['choices'])}, got {value!r}")
            if meta.get("lr") and isinstance(value, str):
                if value == "auto":
                    continue
                raise GraftError(f"{self.flag(f.name)} must be a number or 'auto', got {value!r}")
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                _check_number(self.flag(f.name), value, meta)

    @classmethod
    def flag(cls, name: str) -> str:
        """How the command line names field ``name`` (``--val-split``, ``DATA``), for messages."""
        meta = next(f.metadata for f in fields(cls) if f.name == name)
        return meta.get("flag") or (meta["argument"].upper() if "argument" in meta else "--" + name.replace("_", "-"))

    def to_dict(self) -> dict:
        """The settings as saved in config.yaml."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, saved: dict):
        """A config from settings saved in config.yaml, at this graft's settings version (an older
        run's are upgraded first: :func:`graft.recipes.settings.versions.read_settings`). Keys that
        name no field (what a resume keeps besides, ``lr_found``) are left out."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in names})

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)




def _check_number(flag: str, value, meta) -> None:
    """One number against its field's bounds; NaN and infinities are refused whatever the bounds."""
    low, high = meta.get("low"), meta.get("high")
    low_open, high_open = open_ends(meta)
    if isinstance(value, float) and not math.isfinite(value):
        raise GraftError(f"{flag} must be a finite number, got {value}")
    if (low is not None and (value < low or (low_open and value == low))) or \
            (high is not None and (value > high or (high_open and value == high))):
        raise GraftError(f"{flag} must be in {'(' if low_open else '['}{low if low is not None else '-inf'}, "
                         f"{high if high is not None else 'inf'}{')' if high_open or high is None else ']'}, "
                         f"got {value!r}")


def check_head_spec(spec: str) -> None:
    """A fine-tuning head: ``linear`` or ``mlp:HIDDEN``."""
    if spec == "linear":
        return
    kind, _, hidden = spec.partition(":")
    if kind != "mlp" or (hidden and not (hidden.isdigit() and int(hidden) > 0)):
        raise GraftError(f"bad --head {spec!r}: use linear, or mlp:HIDDEN with HIDDEN a positive integer (mlp:256)")


def comma_list(value) -> list[str] | None:
    """``"a,b"`` (or a list) -> ``["a", "b"]``; None or empty -> None."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    return [str(v).strip() for v in items if str(v).strip()] or None


TASK_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,39}$")


def parse_tasks(specs, what: str = "task") -> dict:
    """``["name=DIR", ...]`` (or a dict, as given) -> {name: DIR}; names are identifiers and
    must not clash. Raises GraftError naming the bad entry."""
    if isinstance(specs, dict):
        specs = [f"{name}={value}" for name, value in specs.items()]
    tasks: dict[str, str] = {}
    for spec in specs:
        name, sep, folder = str(spec).partition("=")
        if not sep or not folder:
            raise GraftError(f"{what} {spec!r}: expected NAME=DIR")
        if not TASK_NAME.match(name):
            raise GraftError(f"{what} name {name!r}: use a letter, then letters, digits, '-' or '_'")
        if name in tasks:
            raise GraftError(f"task names clash: {name!r} is given twice ({tasks[name]} and {folder})")
        tasks[name] = folder
    return tasks


def with_parameters_section(config_cls: type[Config]) -> str:
    """``config_cls``'s docstring with numpydoc ``Parameters`` and ``Raises`` sections built from
    its fields (name, type, default and the help text the command line shows), so the library's
    reference and ``--help`` are one text. Fields the command refuses or hides are marked."""
    doc = inspect.cleandoc(config_cls.__doc__ or "")
    if "\nParameters\n----------" in doc:
        return doc
    lines = [doc, "", "Parameters", "----------"]
    for f in fields(config_cls):
        default = f.default if f.default is not MISSING else (
            f.default_factory() if f.default_factory is not MISSING else None)
        required = f.default is MISSING and f.default_factory is MISSING
        lines.append(f"{f.name} : {f.type}" + ("" if required else f", default {default!r}"))
        text = f.metadata.get("help") or "(no description)"
        if f.name in config_cls.REFUSED:
            text += " Not used by this command: a value other than the default is refused."
        elif f.name in config_cls.CLI_HIDDEN or f.metadata.get("hidden"):
            text += " Library only (not a command-line option)."
        lines.append(f"    {text}")
    lines += ["", "Raises", "------", "GraftError",
              "    On construction, for a value no run can use: outside a field's choices or bounds, NaN or",
              "    infinite, or settings that contradict each other (one line naming the option)."]
    return "\n".join(lines)
