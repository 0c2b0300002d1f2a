"""Backbone registry and contract: real weights, layer listing, cuts, local weight files."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from graft import create_backbone, list_backbones
from graft.errors import ModelError


def _imagenet_top1(backbone, image: Image.Image) -> str:
    from timm.data import ImageNetInfo

    x = torch.from_numpy(backbone.preprocessing.to_array(image))[None]
    with torch.inference_mode():
        index = int(backbone.model(x).argmax(1))
    return ImageNetInfo().index_to_description(index)


def test_registry_lists_offline_lite_backbones():
    names = [entry.name for entry in list_backbones()]
    assert {"tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2"} <= set(names)


def test_lite0_weights_are_real_imagenet_weights(lite0):
    from skimage import data

    cat = _imagenet_top1(lite0, Image.fromarray(data.chelsea()))
    coffee = _imagenet_top1(lite0, Image.fromarray(data.coffee()))
    assert "cat" in cat.lower(), cat
    assert coffee.lower() == "espresso", coffee


def test_lite0_preprocessing_matches_its_weights(lite0):
    p = lite0.preprocessing
    assert (p.size, p.interpolation, p.crop_pct) == (224, "bicubic", 0.875)
    assert p.mean == p.std == (0.5, 0.5, 0.5)


def test_layer_listing_has_shapes_params_and_order(lite0):
    layers = lite0.layers()
    names = [layer.name for layer in layers]
    assert names[0] == "conv_stem" and names[-1] == "classifier"
    assert [layer.index for layer in layers] == list(range(len(layers)))
    by_name = {layer.name: layer for layer in layers}
    assert by_name["conv_stem"].output_shape == (32, 112, 112)
    assert by_name["blocks.6.0"].output_shape == (320, 7, 7)
    assert by_name["classifier"].output_shape == (1000,)
    assert sum(layer.params for layer in layers) == sum(p.numel() for p in lite0.model.parameters())
    assert by_name["global_pool"].trainable is False and by_name["blocks.0.0"].trainable is True


@pytest.mark.parametrize("layer, dim", [("blocks.3", 80), (12, 112), ("blocks.5.2.conv_pw", 1152), (None, 1280)])
def test_feature_net_cuts_at_inner_layers(lite0, layer, dim):
    net = lite0.feature_net(layer)
    with torch.inference_mode():
        out = net(torch.randn(2, 3, 96, 96))
    assert out.shape == (2, dim)


def test_inner_cut_equals_hooked_activation(lite0):
    x = torch.randn(1, 3, 96, 96)
    captured = {}
    handle = lite0.model.blocks[3].register_forward_hook(lambda m, i, o: captured.setdefault("out", o))
    with torch.inference_mode():
        lite0.model(x)
        cut = lite0.feature_net("blocks.3")(x)
    handle.remove()
    assert torch.allclose(cut, captured["out"].mean(dim=(2, 3)), atol=1e-5)


def test_bad_layers_are_clear_errors(lite0):
    with pytest.raises(ModelError, match="no layer named 'nope'"):
        lite0.resolve_layer("nope")
    with pytest.raises(ModelError, match="out of range"):
        lite0.resolve_layer(999)


def test_unknown_backbone_offline_is_a_clear_error():
    with pytest.raises(ModelError, match="neither a graft backbone nor a timm architecture"):
        create_backbone("no_such_net_v9")


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_any_timm_architecture_from_a_local_weights_file(lite0, tmp_path, suffix):
    path = tmp_path / f"weights{suffix}"
    state = {k: v.contiguous() for k, v in lite0.model.state_dict().items()}
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    local = create_backbone("tf_efficientnet_lite0", weights=path)
    assert local.weights_source == f"file:{path.resolve()}"
    x = torch.randn(1, 3, 96, 96)
    with torch.inference_mode():
        np.testing.assert_allclose(local.model(x).numpy(), lite0.model(x).numpy(), atol=1e-5)


def test_local_weights_that_do_not_fit_are_reported(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "wrong.safetensors"
    save_file({"conv_stem.weight": torch.zeros(3, 3)}, str(path))
    with pytest.raises(ModelError, match="does not fit"):
        create_backbone("tf_efficientnet_lite0", weights=path)
