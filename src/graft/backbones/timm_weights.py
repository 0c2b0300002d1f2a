"""Any timm architecture, with weights from a local file or (online only) timm's hub."""
from __future__ import annotations

from pathlib import Path

import torch

from graft.backbones.backbone import Backbone, state_mismatch
from graft.data.preprocess import Preprocessing
from graft.errors import ModelError


def preprocessing_of(model: torch.nn.Module) -> Preprocessing:
    """The eval preprocessing timm records for this architecture's pretrained weights."""
    import timm.data

    cfg = timm.data.resolve_data_config({}, model=model)
    return Preprocessing(
        size=int(cfg["input_size"][-1]),
        interpolation=str(cfg.get("interpolation", "bicubic")),
        crop_pct=float(cfg.get("crop_pct", 0.875)),
        mean=tuple(float(x) for x in cfg["mean"]),
        std=tuple(float(x) for x in cfg["std"]),
    )


def _create(architecture: str, **kwargs) -> torch.nn.Module:
    import timm

    if not timm.is_model(architecture):
        raise ModelError(f"{architecture!r} is neither a graft backbone nor a timm architecture")
    return timm.create_model(architecture, **kwargs)


def read_state_dict(path: Path) -> dict:
    """Tensors from a .safetensors file or a plain .pth/.pt/.bin state dict (never unpickled)."""
    if not path.is_file():
        raise ModelError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors' own error types
            raise ModelError(f"{path}: not a readable safetensors file ({exc})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"{path}: not a loadable weights file ({exc})") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelError(f"{path}: expected a state dict of tensors, found {type(state).__name__}")
    return state


def from_local_file(architecture: str, weights: str | Path) -> Backbone:
    path = Path(weights).expanduser().resolve()
    state = read_state_dict(path)
    model = _create(architecture, pretrained=False)
    head = model.pretrained_cfg.get("classifier")
    # A checkpoint with a classifier of another size (or none) still gives a usable trunk.
    head_keys = {k for k in state if head and k.startswith(head + ".")}
    own = model.state_dict()
    if any(state[k].shape != own[k].shape for k in head_keys if k in own) or not head_keys:
        state = {k: v for k, v in state.items() if k not in head_keys}
        model.reset_classifier(0)
    problem = state_mismatch(model, state)
    if problem:
        raise ModelError(f"{path} does not fit timm's {architecture}: {problem}")
    model.load_state_dict(state, strict=True)
    return Backbone(architecture, architecture, model, f"file:{path}", preprocessing_of(model))


def hub_reachable(host: str = "huggingface.co") -> bool:
    """Can the hub's name be resolved? A DNS lookup only; no connection is made. Offline it
    fails at once, where the hub client would retry for about a minute before giving up."""
    import socket

    try:
        socket.getaddrinfo(host, 443)
        return True
    except OSError:
        return False


def from_timm_hub(architecture: str) -> Backbone:
    online = hub_reachable()
    if not online:
        # Weights downloaded earlier still load from the local hub cache, without retries.
        import huggingface_hub.constants

        huggingface_hub.constants.HF_HUB_OFFLINE = True
    try:
        model = _create(architecture, pretrained=True)
    except ModelError:
        raise
    except Exception as exc:  # network and hub errors come in many types
        if not online:
            raise ModelError(
                f"no pretrained weights for {architecture!r}: offline (huggingface.co does not resolve) and "
                "not in the local hub cache. Pass a local file with --weights, or use a registered backbone "
                "(graft backbones)") from None
        raise ModelError(
            f"could not download pretrained weights for {architecture!r} from timm's hub "
            f"({type(exc).__name__}: {exc}). Offline, pass a local file with --weights, or use "
            "a registered backbone (graft backbones)"
        ) from exc
    return Backbone(architecture, architecture, model, "timm-hub", preprocessing_of(model))


def untrained(architecture: str) -> Backbone:
    model = _create(architecture, pretrained=False)
    return Backbone(architecture, architecture, model, "none", preprocessing_of(model))
