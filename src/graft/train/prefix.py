"""Reusing a frozen prefix: compute its outputs once per stage instead of every epoch.

While the first layers of the network are frozen and the inputs are not augmented, their
outputs on the training (and validation) images never change within a stage. They are
computed once, kept in memory, and each epoch only runs the trainable rest
(:func:`cached_prefix_loaders`); on augmented stages the prefix runs in ONNX Runtime on every
batch instead (:func:`onnx_prefix_stage`). The split is between layer units (see
:func:`graft.backbones.layer_units`) and is checked numerically against the whole network
before it is used.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from graft.backbones import layer_units

MAX_PREFIX_BYTES = 1 << 30  # keep at most 1 GiB of cached activations


class SuffixModel(nn.Module):
    """head(pool(rest of the trunk)) applied to cached prefix outputs."""

    def __init__(self, suffix: nn.Module, head: nn.Module):
        super().__init__()
        self.suffix, self.head = suffix, head

    def forward(self, z):
        z = self.suffix(z)
        if z.ndim == 4:
            z = z.mean(dim=(2, 3))
        return self.head(z)


def frozen_prefix_length(trunk: nn.Module) -> int:
    """Number of leading units with no trainable parameter."""
    units = layer_units(trunk)
    for index, (_, module) in enumerate(units):
        if any(p.requires_grad for p in module.parameters()):
            return index
    return len(units)


def split_model(trunk: nn.Module, head: nn.Module, split: int, sample: torch.Tensor):
    """(prefix, SuffixModel) if running the units in sequence reproduces the trunk, else None."""
    modules = [module for _, module in layer_units(trunk)]
    prefix, suffix = nn.Sequential(*modules[:split]), SuffixModel(nn.Sequential(*modules[split:]), head)
    was_training = trunk.training
    trunk.eval()
    head.eval()
    try:
        with torch.inference_mode():
            whole = trunk(sample)
            if whole.ndim == 4:
                whole = whole.mean(dim=(2, 3))
            pieces = suffix(prefix(sample))
            reference = head(whole)
        same = pieces.shape == reference.shape and torch.allclose(pieces, reference, atol=1e-4, rtol=1e-4)
    except Exception:  # a unit that cannot run on its own: the net is not a plain sequence
        same = False
    finally:
        trunk.train(was_training)
    return (prefix, suffix) if same else None


def _prefetched(loader, depth: int = 2):
    """Iterate ``loader`` in a background thread: JPEG decoding overlaps the network's work.
    The thread stops too when the consumer stops early (an exception, the memory cap)."""
    import queue
    import threading

    items: queue.Queue = queue.Queue(maxsize=depth)
    done, stop = object(), threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for item in loader:
                if not put(item):
                    return
        except BaseException as exc:  # re-raised in the consumer
            put(exc)
        put(done)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while (item := items.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


def onnx_runner(prefix: nn.Module, sample: torch.Tensor):
    """``prefix`` in ONNX Runtime as ``images -> tensor`` (checked against torch on ``sample``),
    or None when ONNX Runtime is missing or the prefix does not export or match.

    ONNX Runtime runs EfficientNet's depthwise convolutions 2-3x faster than eager torch on
    these CPUs (BENCHMARKS.md); whatever it cannot run stays in eager torch.
    """
    import tempfile
    from pathlib import Path

    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return None
    from graft._io.onnx import OnnxRunner, export_onnx

    try:
        with tempfile.TemporaryDirectory() as tmp:
            runner = OnnxRunner(export_onnx(prefix, Path(tmp) / "prefix.onnx", sample.shape[-1], ["z"]))
        with torch.inference_mode():
            expected = prefix.eval()(sample).numpy()
        got = runner(sample.numpy())
        if got.shape != expected.shape or not np.allclose(got, expected, atol=1e-3, rtol=1e-3):
            return None
    except Exception:  # an op the exporter or ORT lacks: eager torch always works
        return None
    return lambda images: torch.from_numpy(runner(images.numpy()))


class OnnxPrefixThen(nn.Module):
    """Augmented stages: the frozen prefix runs in ONNX Runtime on every batch (no autograd,
    2-3x faster than eager torch here), the trainable rest in torch."""

    def __init__(self, run_prefix, suffix: SuffixModel):
        super().__init__()
        self.run_prefix, self.suffix = run_prefix, suffix

    def forward(self, images):
        return self.suffix(self.run_prefix(images))


def encode(prefix: nn.Module, loader: DataLoader, progress: bool = False,
           description: str = "frozen layers", runner=None) -> TensorDataset | None:
    """Prefix outputs of every batch of ``loader`` (in order), or None if they would not fit.

    ``runner``: the prefix in ONNX Runtime (:func:`onnx_runner`); eager torch when None.
    """
    from graft._io.progress import progress_bar

    prefix.eval()
    outputs, labels, total = [], [], 0
    bar = progress_bar(len(loader), description, "batch", progress)
    run = runner or prefix
    try:
        with torch.inference_mode():
            for images, targets in _prefetched(loader):
                z = run(images)
                total += z.numel() * z.element_size()
                if total > MAX_PREFIX_BYTES:
                    return None
                outputs.append(z.clone())
                labels.append(torch.as_tensor(targets))
                bar.update(1)
    finally:
        bar.close()
    dataset = TensorDataset(torch.cat(outputs), torch.cat(labels))
    dataset.engine = "onnx" if runner is not None else "torch"  # reported in history.jsonl
    return dataset


def _split_frozen(trunk, head, loader):
    """(prefix, suffix model, sample batch, units) at the end of the frozen prefix, or None
    when nothing is frozen or the network does not run as a sequence of its units."""
    split = frozen_prefix_length(trunk)
    if split == 0:
        return None
    sample = next(iter(loader))[0][:2]
    parts = split_model(trunk, head, split, sample)
    return None if parts is None else (*parts, sample, split)


def cached_prefix_loaders(trunk, head, train_loader, val_loader, generator, progress: bool = False,
                          encode_pooled=None):
    """(suffix model, train loader, val loader or None, units reused) over cached frozen-prefix
    outputs, or None when nothing is frozen, the net does not split, or the outputs are too big.

    ``train_loader`` / ``val_loader`` may also be dicts of named loaders with the same keys
    (the tasks of a multi-task run, one network): the prefix is split and exported once, each
    loader's outputs are cached, and the loaders come back as dicts under the same keys.

    The cached training loader draws like ``train_loader`` (shuffled by ``generator``, or the
    same weighted sampler; with ``generator`` None, by the loader's own generator).
    ``encode_pooled(dataset) -> TensorDataset | None``, when given, supplies the pooled
    outputs of a wholly frozen trunk (graft's feature extractor: ONNX Runtime and the on-disk
    feature cache); they are checked against the trunk before use.
    """
    split = frozen_prefix_length(trunk)
    if split == 0:
        return None
    several = isinstance(train_loader, dict)
    trains = train_loader if several else {None: train_loader}
    vals = val_loader if several else {None: val_loader}
    outputs = None
    if encode_pooled is not None and split == len(layer_units(trunk)):
        outputs = _pooled_outputs(trunk, trains, vals, encode_pooled)
        suffix_model = SuffixModel(nn.Sequential(), head)
    if outputs is None:
        first = next(iter(trains))
        parts = _split_frozen(trunk, head, vals[first] if vals[first] is not None else trains[first])
        if parts is None:
            return None
        prefix, suffix_model, sample, split = parts
        runner = onnx_runner(prefix, sample)  # one export serves every pass
        outputs = {}
        for key, loader in trains.items():
            name = "" if key is None else f"{key} "
            ordered = DataLoader(loader.dataset, batch_size=loader.batch_size)
            train_outputs = encode(prefix, ordered, progress, f"frozen layers ({name}train)", runner)
            val_outputs = encode(prefix, vals[key], progress, f"frozen layers ({name}val)", runner) \
                if vals[key] is not None else None
            if train_outputs is None or (vals[key] is not None and val_outputs is None):
                return None
            outputs[key] = train_outputs, val_outputs
    cached = {key: _cached_loaders(loader, vals[key], generator, *outputs[key]) for key, loader in trains.items()}
    if several:
        return suffix_model, {k: c[0] for k, c in cached.items()}, {k: c[1] for k, c in cached.items()}, split
    return suffix_model, cached[None][0], cached[None][1], split


def _pooled_outputs(trunk, trains: dict, vals: dict, encode_pooled) -> dict | None:
    """{key: (train outputs, val outputs or None)} from ``encode_pooled``, or None when one
    dataset cannot be encoded that way or its vectors differ from the trunk's own."""
    outputs = {}
    for key, loader in trains.items():
        train_outputs = encode_pooled(loader.dataset)
        if train_outputs is None or not _matches_trunk(trunk, loader.dataset, train_outputs):
            return None
        val_outputs = encode_pooled(vals[key].dataset) if vals[key] is not None else None
        if vals[key] is not None and val_outputs is None:
            return None
        outputs[key] = train_outputs, val_outputs
    return outputs


def _cached_loaders(train_loader, val_loader, generator, train_outputs, val_outputs):
    """Loaders over cached outputs that draw like ``train_loader`` and batch like ``val_loader``."""
    if generator is None:  # the loader's own: a RandomSampler's or a WeightedRandomSampler's
        generator = getattr(train_loader.sampler, "generator", None)
    sampler = _resampler_like(train_loader.sampler, generator)
    train_cached = DataLoader(train_outputs, batch_size=train_loader.batch_size, shuffle=sampler is None,
                              sampler=sampler, generator=generator if sampler is None else None,
                              drop_last=train_loader.drop_last)
    val_cached = DataLoader(val_outputs, batch_size=val_loader.batch_size) if val_loader is not None else None
    return train_cached, val_cached


def _resampler_like(sampler, generator):
    """A weighted sampler like the images loader's (same weights, same generator), or None."""
    from torch.utils.data import WeightedRandomSampler

    if not isinstance(sampler, WeightedRandomSampler):
        return None
    return WeightedRandomSampler(sampler.weights, sampler.num_samples, sampler.replacement, generator=generator)


def onnx_prefix_stage(trunk, head, train_loader, val_loader, progress: bool = False):
    """For augmented stages: (model whose frozen prefix runs in ONNX Runtime per batch, suffix
    model, validation loader over the prefix's cached outputs, units) or None when nothing is
    frozen, the net does not split, or the prefix does not export and match torch.

    ``train_loader`` / ``val_loader`` may be dicts of named loaders (the tasks of a multi-task
    run); the validation loaders then come back as a dict under the same keys."""
    several = isinstance(val_loader, dict)
    vals = val_loader if several else {None: val_loader}
    trains = train_loader if isinstance(train_loader, dict) else {None: train_loader}
    parts = _split_frozen(trunk, head, next((v for v in vals.values() if v is not None), next(iter(trains.values()))))
    if parts is None:
        return None
    prefix, suffix_model, sample, split = parts
    runner = onnx_runner(prefix, sample)
    if runner is None:
        return None
    cached = {}
    for key, loader in vals.items():
        outputs = encode(prefix, loader, progress, f"frozen layers ({'' if key is None else key + ' '}val)", runner) \
            if loader is not None else None
        if loader is not None and outputs is None:
            return None
        cached[key] = DataLoader(outputs, batch_size=loader.batch_size) if loader is not None else None
    return OnnxPrefixThen(runner, suffix_model), suffix_model, cached if several else cached[None], split


def _matches_trunk(trunk, dataset, outputs, count: int = 2) -> bool:
    """Do the first ``count`` precomputed vectors equal the trunk's own pooled outputs?"""
    images = torch.stack([dataset[i][0] for i in range(min(count, len(dataset)))])
    was_training = trunk.training
    trunk.eval()
    with torch.inference_mode():
        z = trunk(images)
    trunk.train(was_training)
    z = z.mean(dim=(2, 3)) if z.ndim == 4 else z
    got = outputs.tensors[0][:len(images)]
    return got.shape == z.shape and torch.allclose(got, z, atol=1e-3, rtol=1e-3)


def pooled_encoder(features, preprocessing, architecture: str, batch_size: int, progress: bool):
    """``dataset -> TensorDataset(pooled features [N, D], labels [N])`` of the current trunk of
    ``features`` through graft's feature extractor, or None for a dataset it cannot encode (not
    plain :class:`~graft.data.datasets.ImageDataset` images, or an image stopped decoding).

    Used while the whole base is frozen: it runs in ONNX Runtime with decoding in a second
    thread, and shares the on-disk feature cache with ``graft fit``/``extract`` (keyed by the
    weights' hash, so a trained trunk never gets stale vectors).
    """
    from torch.utils.data import TensorDataset

    from graft.data.datasets import ImageDataset
    from graft.features.extractor import FeatureExtractor

    def encode_pooled(dataset):
        if not isinstance(dataset, ImageDataset) or dataset.augment != "none":
            return None
        extractor = FeatureExtractor.from_network(features, preprocessing, architecture, batch_size=batch_size,
                                                  progress=progress)
        paths = [record.path for record in dataset.records]
        found = extractor.extract(paths, labels=[record.label for record in dataset.records],
                                  desc="frozen base (features)")
        if len(found) != len(paths):  # an image stopped decoding since the check: use the plain path
            return None
        encoded = TensorDataset(torch.from_numpy(found.vectors), torch.as_tensor(found.labels, dtype=torch.long))
        encoded.engine = "cache" if found.cached == len(paths) else extractor.engine_
        return encoded

    return encode_pooled
