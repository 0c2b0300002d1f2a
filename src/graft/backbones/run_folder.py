"""A graft run folder is a backbone: the trunk of the model it saved, with that model's
preprocessing and layer names; its head is dropped. It is one more weight source behind the
registry's contract, so ``fit``, ``extract``, ``layers``, ``finetune`` and the rest take
``--backbone RUN_DIR`` without knowing where the weights came from.

Pretrain on a source dataset (``graft pretrain`` or ``graft finetune``), then transfer from it
like from ImageNet. The artifact is read from safetensors + JSON; nothing is unpickled.
"""
from __future__ import annotations

from graft._io.artifact import model_folder
from graft.errors import ModelError


def from_run_folder(name):
    """The :class:`~graft.backbones.Backbone` of the model saved in run folder ``name``."""
    import torch
    from safetensors.torch import load_file

    from graft._io.artifact import WEIGHTS_FILE, read_artifact_config
    from graft.backbones.backbone import Backbone, state_mismatch
    from graft.backbones.timm_weights import _create
    from graft.data.preprocess import Preprocessing

    folder = model_folder(name)
    if folder is None:
        raise ModelError(f"{name} is not a graft run: no model/graft.json in it")
    config = read_artifact_config(folder)
    if config["layer"] is not None:
        raise ModelError(f"{folder} was cut at layer {config['layer']!r}: only a model that uses its network's "
                         "final pooled features can serve as a whole backbone")
    architecture = config["backbone"]["architecture"]
    model = _create(architecture, pretrained=False)
    model.reset_classifier(0)
    weights = folder / WEIGHTS_FILE
    try:
        tensors = load_file(str(weights))
    except Exception as exc:  # safetensors' own error types
        raise ModelError(f"{weights}: not a readable safetensors file ({type(exc).__name__}: {exc})") from None
    trunk = {k[len("backbone."):]: v for k, v in tensors.items() if k.startswith("backbone.")}
    problem = state_mismatch(model, trunk)
    if problem:
        raise ModelError(f"{weights} does not match {folder / 'graft.json'}: backbone {problem}")
    with torch.no_grad():
        model.load_state_dict(trunk, strict=True)
    return Backbone(str(folder.parent if folder.name == "model" else folder), architecture, model,
                    f"run:{folder}", Preprocessing.from_dict(config["preprocessing"]))
