"""config.yaml's versions: how a training run's settings are written, and the one way settings
written by an older graft are read.

A training run's config.yaml is ``{"command", "settings", ..., "settings_version"}``
(:func:`settings_record`). :func:`read_settings` brings a saved record to
:data:`SETTINGS_VERSION` one step at a time (:data:`UPGRADES`: version -> the function to the
next), so a setting added later is filled in once, with what runs written without it did, and a
file at the current version that lacks a setting is damaged, not old.
"""
from __future__ import annotations

from graft.errors import GraftError
from graft.recipes.settings.networks import AdaptConfig, DistillConfig, FinetuneConfig, MultitaskConfig, PretrainConfig

# 1: graft before issue 26 (no settings_version in config.yaml); 2: the version is written.
SETTINGS_VERSION = 2

# The commands continued by the fine-tuning path (graft.recipes._training.continue_training).
FINETUNING_COMMANDS = tuple(c.COMMAND for c in (FinetuneConfig, PretrainConfig, AdaptConfig, DistillConfig))

# Version 1: settings added over its lifetime, and what runs written before each existed did (multitask's
# optimizer, weight decay and schedule were not saved: it trained with these).
_ADDED_IN_VERSION_1 = {"layer_decay": None, "schedule": "cosine", "mixup": 0.0, "cutmix": 0.0, "class_weight": None,
                       "sampler": "shuffle", "test_dir": None, "final": False, "pretrained": True,
                       "transfer_layers": None, "transfer_from": None, "freeze_transferred": False, "exclude": None,
                       "monitor": "val_accuracy", "mode": "max"}  # kept the epoch of highest validation accuracy
# Later in version 1 multitask gained these; runs written before them augmented every stage, drew
# every task's batch together each step and trained the BatchNorm statistics.
_MULTITASK_IN_VERSION_1 = {"optimizer": "adamw", "weight_decay": 1e-4, "schedule": "cosine",
                           "augment_head_stage": True, "task_sampling": "together", "train_statistics": True}


def settings_record(command: str, settings: dict, **more) -> dict:
    """What a training run writes to config.yaml: its command, its settings (a Config's
    :meth:`~graft.config.Config.to_dict`, and what a resume needs besides), ``more`` (the
    classes, ...) and, last, :data:`SETTINGS_VERSION`."""
    return {"command": command, "settings": settings, **more, "settings_version": SETTINGS_VERSION}


def read_settings(saved: dict, where) -> dict:
    """``saved`` (config.yaml of a training run, as read) at :data:`SETTINGS_VERSION`: upgraded
    one step at a time from its ``settings_version`` (1 when absent). Raises
    :class:`~graft.errors.GraftError` naming ``where`` for a version this graft does not know
    (a newer graft wrote it, or the file was edited)."""
    version = saved.get("settings_version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise GraftError(f"{where}: settings_version {version!r} is not one graft writes: the file was edited")
    if version > SETTINGS_VERSION:
        raise GraftError(f"{where} was written by a newer graft (settings version {version}; this graft reads up "
                         f"to {SETTINGS_VERSION}): continue it with that graft")
    record = dict(saved)
    for step in range(version, SETTINGS_VERSION):
        record = UPGRADES[step](record)
    return {**record, "settings_version": SETTINGS_VERSION}


def _from_version_1(record: dict) -> dict:
    """1 -> 2: a fine-tuning run gets the settings it lacks as runs written before them did;
    ``augment_head_stage`` follows ``augment`` (older runs augmented every stage alike). A
    multitask run gets the optimizer, weight decay and schedule it trained with, and the
    stage augmentation, task sampling and BatchNorm statistics of runs written before those settings."""
    saved = record.get("settings")
    if not isinstance(saved, dict):
        return record
    if record.get("command") == MultitaskConfig.COMMAND:
        return {**record, "settings": {**_MULTITASK_IN_VERSION_1, **saved}}
    if record.get("command") not in FINETUNING_COMMANDS:
        return record
    settings = {**_ADDED_IN_VERSION_1, **saved}
    if "augment_head_stage" not in saved and "augment" in saved:
        settings["augment_head_stage"] = saved["augment"] not in ("none", False, None)
    return {**record, "settings": settings}


UPGRADES = {1: _from_version_1}
