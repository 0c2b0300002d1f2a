"""Single-pass routes to issue #12's accuracy bars (flowers17 >= 97.5 % on the 25 % split with
seed 0, hymenoptera >= 96 % on its val folder), all at the cost of one lite0 pass per image:
the pooling at the cut (average, max, GeM with p = 3), signed-square-root ("power")
normalisation before graft's standardisation, and the final features concatenated with an
inner block's pooled output (blocks 5 or 6). Each cell is graft's logreg head with its
CV-chosen C. The image's mirror is extracted as well, for the mirror-averaged rows.

    python bench/bench_frozen_pooling.py          # about 5 minutes of extraction, then the fits
"""
from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
POOLS = ("avg", "max", "gem")
CUTS = {"b5": "blocks.5", "b6": "blocks.6", "head": "bn2"}


def pooled_maps(model, preprocessing, paths, batch_size: int = 32) -> dict[str, np.ndarray]:
    """{cut: array (N, 2 views [image, mirror], 3 pools, C)} for every cut in CUTS."""
    import torch
    from PIL import Image

    from graft.data.folders import load_image

    outputs, handles = {}, []
    for name, module_name in CUTS.items():
        module = model.get_submodule(module_name)
        handles.append(module.register_forward_hook(lambda _m, _i, out, name=name: outputs.__setitem__(name, out)))
    views = {name: [[], []] for name in CUTS}
    for start in range(0, len(paths), batch_size):
        images = [preprocessing.resize_and_crop(load_image(p, min_side=preprocessing.resize_size))
                  for p in paths[start:start + batch_size]]
        for view, flip in enumerate((False, True)):
            batch = [preprocessing.normalize(im.transpose(Image.FLIP_LEFT_RIGHT) if flip else im) for im in images]
            with torch.inference_mode():
                model(torch.from_numpy(np.stack(batch)))
            for name, out in outputs.items():
                gem = out.clamp(min=1e-6).pow(3).mean((2, 3)).pow(1 / 3)
                views[name][view].append(torch.stack([out.mean((2, 3)), out.amax((2, 3)), gem], 1).numpy())
    for handle in handles:
        handle.remove()
    return {name: np.stack([np.concatenate(v) for v in pair], 1) for name, pair in views.items()}


def score(train, val, y_train, y_val, cuts, pool, power, average) -> tuple[float, float]:
    from graft.heads.classical import fit_head

    def features(maps):
        x = np.concatenate([maps[cut][:, :, POOLS.index(pool)] for cut in cuts], -1)
        x = np.sign(x) * np.sqrt(np.abs(x)) if power else x
        return x.mean(1) if average else x[:, 0]

    head = fit_head("logreg", features(train), y_train, int(y_train.max()) + 1, 0)
    return float((head.probabilities(features(val)).argmax(1) == y_val).mean()), head.params["C"]


def main() -> None:
    import torch

    from graft.backbones import create_backbone
    from graft.data.folders import load_train_val

    argparse.ArgumentParser(description=__doc__).parse_args()
    backbone = create_backbone("tf_efficientnet_lite0")
    model = backbone.model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        splits = {"flowers17": load_train_val(DATASETS / "flowers17", val_fraction=0.25, seed=0),
                  "hymenoptera": load_train_val(DATASETS / "hymenoptera" / "train",
                                                val_dir=DATASETS / "hymenoptera" / "val")}
    maps = {}
    started = time.perf_counter()
    for name, (train, val) in splits.items():
        maps[name] = [pooled_maps(model, backbone.preprocessing, folder.paths) for folder in (train, val)]
        print(f"extracted {name} in {time.perf_counter() - started:.0f} s (eager torch, "
              f"{torch.get_num_threads()} threads)", flush=True)
    rows = [(("head",), pool, power, False) for pool in POOLS for power in (False, True)]
    rows += [(("head", inner), pool, power, False) for inner in ("b6", "b5") for pool in ("avg", "gem")
             for power in (False, True)]
    rows += [(("head",), "avg", power, True) for power in (False, True)]
    rows += [(("head", "b5"), "avg", power, True) for power in (False, True)]
    print(f"{'features':10s} {'pool':4s} {'power':5s} {'mirror':6s}  flowers17 (C)     hymenoptera (C)")
    for cuts, pool, power, average in rows:
        cells = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for name, (train, val) in splits.items():
                accuracy, C = score(*maps[name], train.labels, val.labels, cuts, pool, power, average)
                cells.append(f"{accuracy:.4f} ({C:g})")
        print(f"{'+'.join(cuts):10s} {pool:4s} {'yes' if power else 'no':5s} {'avg' if average else 'no':6s}  "
              + "   ".join(cells), flush=True)


if __name__ == "__main__":
    main()
