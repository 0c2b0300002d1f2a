"""graft: transfer learning for image classifiers, fast and offline on a CPU.

The public API; each name lives in the module that owns it.
"""
from .backbones import Backbone, create_backbone, list_backbones, register_backbone
from .data import ImageFolder, load_image, load_train_val, scan_folder, stratified_split
from .errors import DataError, GraftError, ImageDecodeError, ModelError
from .features import FeatureExtractor, Features
from .fit import evaluate, fit_frozen
from .heads import CLASSICAL_HEADS, HEAD_MODULES, build_head, fit_head
from .model import GraftModel
from .preprocess import Preprocessing

__version__ = "0.1.0"

__all__ = [
    "Backbone", "CLASSICAL_HEADS", "DataError", "FeatureExtractor", "Features", "GraftError",
    "GraftModel", "HEAD_MODULES", "ImageDecodeError", "ImageFolder", "ModelError", "Preprocessing",
    "build_head", "create_backbone", "evaluate", "fit_frozen", "fit_head", "list_backbones",
    "load_image", "load_train_val", "register_backbone", "scan_folder", "stratified_split",
]
