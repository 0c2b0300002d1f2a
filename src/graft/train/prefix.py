"""Reusing a frozen prefix: compute its outputs once per stage instead of every epoch.

While the first layers of the network are frozen and the inputs are not augmented, their
outputs on the training (and validation) images never change within a stage. They are
computed once, kept in memory, and each epoch only runs the trainable rest. The split is
between layer units (see :func:`graft.backbones.layer_units`) and is checked numerically
against the whole network before it is used.
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
