"""Will it fit? A memory estimate for a network at an image size and batch size, made before
anything runs, so that ``--image-size 4000`` is refused in a second instead of swapping the
machine to a halt an hour later.

The estimate runs the network once on a small probe image and records every leaf module's
output size; activations grow with the number of pixels, so they scale by (size / probe)^2.
Inference needs the largest few activations of a batch at once; training keeps (nearly) all of
them for the backward pass.
"""
from __future__ import annotations

import warnings

from graft.errors import GraftError

PROBE_SIZE = 64
GIB = 1024 ** 3


def activation_bytes(net, probe_size: int = PROBE_SIZE) -> tuple[int, int]:
    """(sum, largest) of the leaf modules' float32 output bytes for one probe image."""
    import torch

    sizes: list[int] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: sizes.append(out.numel() * 4 if torch.is_tensor(out) else 0))
             for m in net.modules() if not list(m.children())]
    was_training = net.training
    try:
        net.eval()
        with torch.inference_mode():
            net(torch.zeros(1, 3, probe_size, probe_size))
    finally:
        for hook in hooks:
            hook.remove()
        net.train(was_training)
    return sum(sizes), max(sizes, default=0)


def estimate_bytes(net, image_size: int, batch_size: int, training: bool) -> int:
    total, largest = activation_bytes(net)
    scale = (image_size / PROBE_SIZE) ** 2
    params = sum(p.numel() for p in net.parameters()) * 4
    inputs = 3 * image_size * image_size * 4 * batch_size
    if training:  # activations kept for backward, their gradients, weights + grads + Adam moments
        return int(1.5 * total * scale * batch_size + 4 * params + 2 * inputs)
    # a layer's input and output plus workspace, and the decoded images waiting for the next batch
    return int(3 * largest * scale * batch_size + params + 3 * inputs)


def available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), else total physical memory, else None."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import os

        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits(net, image_size: int, batch_size: int, training: bool) -> int:
    """Refuse (GraftError) when the estimate exceeds the available memory; warn above half of
    it. Returns the estimate in bytes."""
    need = estimate_bytes(net, image_size, batch_size, training)
    have = available_bytes()
    what = "training" if training else "feature extraction"
    if have is not None and need > have:
        raise GraftError(
            f"--image-size {image_size} with --batch-size {batch_size} needs about {need / GIB:.1f} GiB for "
            f"{what}, and this machine has {have / GIB:.1f} GiB available: use a smaller --image-size "
            f"(the weights were trained at a few hundred px) or --batch-size")
    if have is not None and need > have / 2:
        warnings.warn(f"--image-size {image_size} with --batch-size {batch_size} needs about {need / GIB:.1f} GiB "
                      f"for {what}, more than half of the {have / GIB:.1f} GiB available")
    return need


def check_training_memory(features, image_size: int, batch_size: int, whole_base: bool) -> None:
    """Refuse what cannot even run forward; warn where training the whole base (``whole_base``) may not fit
    (stages that train only the top keep far fewer activations, so that is no refusal)."""
    check_fits(features, image_size, batch_size, training=False)
    if whole_base:
        need, have = estimate_bytes(features, image_size, batch_size, training=True), available_bytes()
        if have is not None and need > have:
            warnings.warn(f"training the whole network at --image-size {image_size}, --batch-size {batch_size} "
                          f"needs about {need / GIB:.1f} GiB, more than the {have / GIB:.1f} GiB available")
