"""``graft zeroshot``: a classifier with no training image (zero-shot learning).

Each class name is resolved to a WordNet noun synset and the ImageNet-1k classes beneath it
(:mod:`graft.curation.wordnet`); the model is the backbone with its own ImageNet classifier,
then a fixed layer summing the probabilities of each class's ImageNet classes
(:class:`~graft.heads.modules.ClassSumHead`). It is an ordinary graft model folder: ``graft
predict``, ``evaluate``, ``serve`` and ``export`` use it. It works only where the names are
ImageNet concepts (ants and bees, not most flowers): names without ImageNet classes beneath
them, or with several senses that have some, are refused, one line each, before anything is
written.
"""
from __future__ import annotations

import json
import time

import torch

from graft._io.files import write_atomic
from graft.artifacts.model import GraftModel
from graft.artifacts.run_folder import open_run
from graft.curation.wordnet import load_table, membership, resolve
from graft.errors import GraftError
from graft.heads.modules import ClassSumHead
from graft.recipes._run import FitResult
from graft.recipes.settings import ZeroshotConfig

__all__ = ["ZeroshotConfig", "zeroshot"]


def zeroshot(config, out, *, strict: bool = False, progress: bool = True, overwrite: bool = False,
             **settings) -> FitResult:
    """Write a zero-shot model for ``config.classes`` into the run folder ``out``.

    ``config``: a :class:`~graft.recipes.settings.ZeroshotConfig`, or the class names
    (``"ant,bee"``) with its fields as keywords. Raises GraftError (one line per name) for
    names it cannot cover, and when the backbone has no 1000-class ImageNet classifier."""
    from graft.backbones import create_backbone

    start = time.perf_counter()
    if not isinstance(config, ZeroshotConfig):
        config = ZeroshotConfig(classes=config, **settings)
    classes = resolve(config.classes)
    backbone = create_backbone(config.backbone, weights=config.weights)
    classifier = backbone.model.get_classifier() if hasattr(backbone.model, "get_classifier") else None
    if not isinstance(classifier, torch.nn.Linear) or classifier.out_features != 1000:
        raise GraftError(f"--backbone {config.backbone}: zero-shot needs the network's ImageNet-1k classifier "
                         "(a 1000-class linear layer), and this one has none")
    features = backbone.feature_net(None)
    head = ClassSumHead(classifier.in_features, len(classes))
    with torch.no_grad():
        head.fc.load_state_dict(classifier.state_dict())
        head.membership.copy_(torch.from_numpy(membership(classes)))
    table = load_table()
    mapping = {c.name: c.describe(table) for c in classes}
    run = open_run(out, "zeroshot", overwrite=overwrite)
    with run.lock("zeroshot"):
        training = {"method": "zero-shot (WordNet x ImageNet-1k classifier)", "n_fitted": 0, "wordnet": mapping}
        GraftModel.from_backbone(backbone, head.eval(), [c.name for c in classes], features=features,
                                 training=training).eval().save(run.model_dir)
        run.write_config({"command": "zeroshot", **config.to_dict()})
        write_atomic(run.path / "zeroshot.json", json.dumps(mapping, indent=2) + "\n")
    lines = [f"{name}: {m['wnid']} ({m['synset']}), {m['imagenet_classes']} ImageNet class(es), e.g. "
             f"{', '.join(m['examples'][:4])}" for name, m in mapping.items()]
    lines.append(f"wrote {run.path}/: model/ zeroshot.json config.yaml in {time.perf_counter() - start:.1f} s; try "
                 f"`graft predict {run.path} IMAGE` or `graft evaluate {run.path} LABELLED_DIR`")
    return FitResult(run.path, {"classes": mapping, "summary": "\n".join(lines)})
