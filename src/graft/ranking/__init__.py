"""Transferability scores of frozen features: LogME (You et al., ICML 2021) and LEEP (Nguyen et
al., ICML 2020), used by the advisor to rank backbones and layers without training."""
from graft.ranking.scores import leep, logme

__all__ = ["leep", "logme"]
