"""Typed settings of every recipe: the one place a default is written.

Each recipe takes one Config dataclass. It is the single source of defaults, validation (on
construction: a bad value is one :class:`~graft.errors.GraftError` naming the setting) and the
schema of ``config.yaml`` (``settings:`` holds :meth:`Config.to_dict`). The command line builds
its options from these fields (:mod:`graft.cli.options`), so a CLI default cannot differ from
the library's. Each field's ``metadata`` holds what the command line needs (help text, flag
name, choices, bounds) as plain data: this module imports neither click nor torch.
"""
from __future__ import annotations

from graft.config import Config, check_head_spec, comma_list, open_ends, parse_tasks, setting, with_parameters_section
from graft.defaults import DEFAULT_BACKBONE
from graft.recipes.settings.curation import AuditConfig, ZeroshotConfig
from graft.recipes.settings.export import EXPORT_FORMATS, ExportConfig
from graft.recipes.settings.features import AdviseConfig, FewshotConfig, FrozenFitConfig
from graft.recipes.settings.names import (
                                          ADVERSARY_NAMES,
                                          DEFAULT_VAL_FRACTION,
                                          OPTIMIZER_NAMES,
                                          REGULARIZERS,
                                          SCHEDULE_NAMES,
                                          WEIGHTING_NAMES,
)
from graft.recipes.settings.networks import (
                                          AdaptConfig,
                                          DistillConfig,
                                          FinetuneConfig,
                                          LRFindConfig,
                                          MultitaskConfig,
                                          PretrainConfig,
)
from graft.recipes.settings.unlabelled import ClusterConfig, SelectConfig

__all__ = ["ADVERSARY_NAMES", "DEFAULT_BACKBONE", "DEFAULT_VAL_FRACTION", "OPTIMIZER_NAMES", "REGULARIZERS",
           "SCHEDULE_NAMES", "WEIGHTING_NAMES", "AdaptConfig", "AdviseConfig", "Config", "DistillConfig",
           "FewshotConfig", "FinetuneConfig", "FrozenFitConfig", "LRFindConfig", "MultitaskConfig", "PretrainConfig",
           "ClusterConfig", "SelectConfig",
           "check_head_spec", "comma_list", "open_ends", "parse_tasks", "setting",
           "AuditConfig", "ZeroshotConfig", "EXPORT_FORMATS", "ExportConfig"]

# Each Config's reference (help(), the API pages) lists its fields with the help text --help shows.
for _config in (AdaptConfig, AdviseConfig, AuditConfig, ClusterConfig, DistillConfig, ExportConfig, FewshotConfig,
                FinetuneConfig, FrozenFitConfig, LRFindConfig, MultitaskConfig, PretrainConfig, SelectConfig,
                ZeroshotConfig):
    _config.__doc__ = with_parameters_section(_config)
