"""The model: backbone (cut at a layer) + head, as one torch network.

Every training path (frozen features + classical head, fine-tuning) ends in a
:class:`GraftModel`; ``export`` and :mod:`graft.inference` (``predict``, ``evaluate``,
``serve``) only ever see this class or its ONNX export. The
folder format is in :mod:`graft._io.artifact`. Loading rebuilds the architecture from timm and
fills it from safetensors: nothing is unpickled.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from graft._io.artifact import CONFIG_FILE, WEIGHTS_FILE, read_artifact_config, refuse_projector, write_artifact
from graft.artifacts.config import artifact_config
from graft.artifacts.novelty import Novelty
from graft.backbones import Backbone, PooledFeatures, create_backbone, state_mismatch
from graft.data.preprocess import Preprocessing
from graft.errors import GraftError, ModelError
from graft.heads.modules import build_head, head_probabilities


class GraftModel(nn.Module):
    """A trained classifier: images -> logits, ``features`` (the backbone cut at a layer and
    pooled) then ``head``; saved and loaded as a folder (``graft.json`` + ``weights.safetensors``).

    Parameters
    ----------
    features : PooledFeatures
        The feature network: (N, 3, H, W) float images, normalised by ``preprocessing``, to
        (N, D) vectors.
    head : torch.nn.Module
        (N, D) -> (N, len(classes)) logits (:func:`graft.heads.modules.build_head`).
    classes : list of str
        Class names, in label order.
    preprocessing : Preprocessing
        How an image becomes the network's input.
    backbone_info : dict
        ``name``, ``architecture``, ``weights_source`` of the backbone.
    training : dict, optional
        How the model was made (graft.json's ``training``).

    See Also
    --------
    GraftModel.load : a saved model (raises ModelError for a folder without one).
    graft.inference.Predictor : predictions on ONNX Runtime or torch.
    """

    def __init__(self, features: PooledFeatures, head: nn.Module, classes: list[str],
                 preprocessing: Preprocessing, backbone_info: dict, training: dict | None = None):
        super().__init__()
        self.features = features
        self.head = head
        self.classes = list(classes)
        self.preprocessing = preprocessing
        self.backbone_info = dict(backbone_info)
        self.training_info = dict(training or {})

    @classmethod
    def from_backbone(cls, backbone: Backbone, head: nn.Module, classes, layer=None,
                      preprocessing: Preprocessing | None = None, training: dict | None = None,
                      features: PooledFeatures | None = None) -> "GraftModel":
        features = features if features is not None else backbone.feature_net(layer)
        info = {"name": backbone.name, "architecture": backbone.architecture,
                "weights_source": backbone.weights_source}
        return cls(features, head, classes, preprocessing or backbone.preprocessing, info, training)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))

    @property
    def layer(self) -> str | None:
        return self.features.cut_layer

    def config(self) -> dict:
        return artifact_config(self.backbone_info, self.layer, self.preprocessing.to_dict(),
                               self.classes, self.head.config(), self.training_info)

    # -- persistence ------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        def as_numpy(module):
            return {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}

        return write_artifact(directory, self.config(), as_numpy(self.features.trunk), as_numpy(self.head))

    @classmethod
    def load(cls, directory: str | Path) -> "GraftModel":
        from safetensors.torch import load_file

        directory = Path(directory)
        if (directory / "model" / CONFIG_FILE).exists():  # a run folder: its model/ inside
            directory = directory / "model"
        config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
        if not config_path.exists() or not weights_path.exists():
            raise ModelError(f"{directory} is not a graft model: expected {CONFIG_FILE} and {WEIGHTS_FILE} "
                             "(or a run folder holding model/)")
        config = read_artifact_config(directory)
        refuse_projector(config, config_path)
        info = config["backbone"]
        try:
            backbone = create_backbone(info["name"], pretrained=False) if _registered(info["name"]) \
                else create_backbone(info["architecture"], pretrained=False)
            features = backbone.feature_net(config["layer"])
            head = build_head(config["head"])
        except (GraftError, KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{config_path}: describes a network graft cannot build ({exc})") from None
        try:
            tensors = load_file(str(weights_path))
        except Exception as exc:  # safetensors raises its own error types for damaged files
            raise ModelError(f"{weights_path}: not a readable safetensors file ({type(exc).__name__}: {exc})") from None
        for part, module in (("backbone.", features.trunk), ("head.", head)):
            problem = state_mismatch(module, _strip(tensors, part))
            if problem:
                raise ModelError(f"{weights_path} does not match {config_path}: {part.rstrip('.')} {problem}")
            module.load_state_dict(_strip(tensors, part), strict=True)
        preprocessing = Preprocessing.from_dict(config["preprocessing"])
        model = cls(features, head, config["classes"], preprocessing, info, config.get("training")).eval()
        model.novelty_stats = Novelty.load(directory)  # None for a model trained before novelty existed
        return model

    # -- inference --------------------------------------------------------------------------
    def extractor(self, **params):
        """A :class:`~graft.features.extractor.FeatureExtractor` over this model's (frozen) features."""
        from graft.features.extractor import FeatureExtractor

        return FeatureExtractor.from_network(self.features, self.preprocessing,
                                             self.backbone_info["architecture"], **params)

    novelty_stats: Novelty | None = None

    def novelty(self, vectors: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        """``(novelty (N,), unfamiliar (N,) bool)`` for pooled features (N, D), e.g. the
        ``.vectors`` of :meth:`predict_paths`; ``(None, None)`` for a model without statistics.
        See :mod:`graft.artifacts.novelty`."""
        if self.novelty_stats is None or not len(vectors):
            return None, None
        with torch.inference_mode():
            logits = self.head.eval()(torch.from_numpy(np.asarray(vectors, np.float32))).numpy()
        return self.novelty_stats.judge(vectors, logits)

    def head_probabilities(self, vectors: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            logits = self.head.eval()(torch.from_numpy(np.asarray(vectors, np.float32)))
            return head_probabilities(self.head, logits).numpy()

    def predict_paths(self, paths, strict: bool = False, tta: str | None = None, **extractor_params):
        """(Features, probabilities (N, C)) for image files; unreadable files are in ``.skipped``.

        ``tta="flip"`` averages the probabilities of each image and its horizontal mirror.
        The library's feature-level path: pooled features through the model's
        :class:`~graft.features.extractor.FeatureExtractor` (its engine and on-disk cache), then
        the head in torch. The commands (``graft predict``, ``evaluate``, ``serve``) use
        :class:`graft.inference.Predictor` instead, which runs the whole model on each image;
        the two agree to float rounding (max 1.2e-7 on hymenoptera val).
        """
        if tta not in (None, "none", "flip"):
            raise GraftError(f"unknown test-time augmentation {tta!r}: none or flip")
        features = self.extractor(**extractor_params).extract(paths, strict=strict, desc="predicting")
        probabilities = self.head_probabilities(features.vectors)
        if tta == "flip":
            mirrored = self.extractor(flip=True, **extractor_params).extract(paths, strict=strict,
                                                                             desc="predicting (mirrored)")
            if mirrored.paths != features.paths:  # a file changed between the two passes
                raise GraftError("the images changed while predicting; run again")
            probabilities = (probabilities + self.head_probabilities(mirrored.vectors)) / 2
        return features, probabilities

    def export_onnx(self, path: str | Path) -> Path:
        from graft._io.onnx import export_onnx

        return export_onnx(WithProbabilities(self.eval()), Path(path), self.preprocessing.size,
                           ["logits", "probabilities"])


class WithProbabilities(nn.Module):
    """images -> (logits, probabilities): the two outputs of an exported model."""

    def __init__(self, model: nn.Module, head: nn.Module | None = None):
        """``head``: the classifier whose classes the logits score (``model.head`` by default;
        given when ``model`` wraps a GraftModel, as the uint8-input export does)."""
        super().__init__()
        self.model = model
        head = head if head is not None else model.head
        # a plain function, not a submodule: the head's weights stay registered once
        self.probabilities = lambda logits: head_probabilities(head, logits)

    def forward(self, images):
        logits = self.model(images)
        return logits, self.probabilities(logits)


def _strip(tensors: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def _registered(name: str) -> bool:
    from graft.backbones.registry import get_entry

    return get_entry(name) is not None
