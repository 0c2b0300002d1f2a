"""Data: class-folder scanning, stratified splits, robust RGB decoding (:mod:`.folders`), the
input recipe (:mod:`.preprocess`), augmentation names and torch datasets (:mod:`.datasets`)."""
from graft.data.folders import ImageFolder, Record, load_image, load_train_val, scan_folder, scan_unlabelled

__all__ = ["ImageFolder", "Record", "load_image", "load_train_val", "scan_folder", "scan_unlabelled"]
