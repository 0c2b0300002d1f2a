"""A model anyone can run: this test plays a third party who has only ``graft.json`` and
``model.onnx``. Its preprocessing below is written from the recipe graft documents (in
graft.json's ``input_recipe`` and the ONNX metadata), with PIL + numpy + onnxruntime and none of
graft's code, and it must agree with ``graft predict`` on real photos of every odd kind."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageOps

from graft.cli import main


# ----------------------------------------------------------------------------- the third party's code
def third_party_pixels(path, size: int, short: int) -> np.ndarray:
    """Decode + resize + crop, as graft.json's input_recipe says. Returns (size, size, 3) uint8."""
    image = Image.open(path)
    if image.format == "JPEG" and short < min(image.size):
        image.draft("RGB", (short, short))
    image.load()
    image = ImageOps.exif_transpose(image)
    alpha_modes = ("RGBA", "LA", "PA", "La", "RGBa")
    if image.mode in alpha_modes or ("transparency" in image.info and image.mode in ("P", "L", "RGB", "1")):
        rgba = image.convert("LA").convert("RGBA") if image.mode == "La" else image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba).convert("RGB")
    elif image.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        grey = np.round(np.asarray(image).astype(np.float64) / 257.0).astype(np.uint8)
        image = Image.fromarray(grey).convert("RGB")
    elif image.mode == "I":
        values = np.asarray(image).astype(np.float64)
        values = np.round(np.clip(values, 0, 65535) / 257.0) if values.max() > 255 else np.clip(values, 0, 255)
        image = Image.fromarray(values.astype(np.uint8)).convert("RGB")
    else:
        image = image.convert("RGB")
    width, height = image.size
    if width <= height:
        new = (short, int(short * height / width))
    else:
        new = (int(short * width / height), short)
    if new != image.size:
        image = image.resize(new, Image.Resampling.BICUBIC)
    left, top = int(round((new[0] - size) / 2.0)), int(round((new[1] - size) / 2.0))
    return np.asarray(image.crop((left, top, left + size, top + size)))


def third_party_predict(model_path, config: dict, paths) -> np.ndarray:
    import onnx
    import onnxruntime

    meta = {p.key: p.value for p in onnx.load(str(model_path)).metadata_props}
    prep = json.loads(meta["graft.preprocessing"])
    recipe = json.loads(meta["graft.input_recipe"])
    assert prep == config["preprocessing"] and recipe == config["input_recipe"]
    assert json.loads(meta["graft.classes"]) == config["classes"]
    input_type = json.loads(meta["graft.input"])["type"]
    size, short = prep["size"], recipe["resize_shorter_side"]
    batch = np.stack([third_party_pixels(p, size, short) for p in paths])
    if input_type == "float":
        mean = np.float32(255.0) * np.asarray(prep["mean"], np.float32)
        inv_std = np.float32(1.0) / (np.float32(255.0) * np.asarray(prep["std"], np.float32))
        batch = ((batch.astype(np.float32) - mean) * inv_std).transpose(0, 3, 1, 2).copy()
    session = onnxruntime.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    return session.run(["probabilities"], {"images": batch})[0]


# ----------------------------------------------------------------------------- odd real images
def _jpeg_with_orientation(image: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=92, exif=exif.tobytes())
    return buffer.getvalue()


@pytest.fixture(scope="module")
def odd_images(tmp_path_factory):
    from skimage import data as photos

    root = tmp_path_factory.mktemp("odd")
    cat, coffee, astronaut = (Image.fromarray(photos.chelsea()), Image.fromarray(photos.coffee()),
                              Image.fromarray(photos.astronaut()))
    paths = {}

    def keep(name, save):
        paths[name] = root / name
        save(paths[name])

    rgba = cat.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(cat.size))
    keep("rgba.png", rgba.save)
    palette = coffee.quantize(64)
    keep("palette-transparent.png", lambda p: palette.save(p, transparency=0))
    sixteen = (np.asarray(Image.fromarray(photos.camera())).astype(np.uint16) * 257
               + np.random.default_rng(0).integers(0, 200, (512, 512)).astype(np.uint16))
    keep("grey16.png", lambda p: Image.fromarray(sixteen).save(p))
    assert Image.open(root / "grey16.png").mode.startswith("I")
    keep("exif-rotated.jpg", lambda p: p.write_bytes(_jpeg_with_orientation(coffee, 6)))
    keep("non-square.jpg", lambda p: cat.save(p, quality=90))
    keep("large.jpg", lambda p: astronaut.resize((1100, 900)).save(p, quality=90))
    keep("grey.jpg", lambda p: coffee.convert("L").save(p, quality=90))
    keep("cmyk.jpg", lambda p: astronaut.convert("CMYK").save(p, quality=90))
    keep("tiny.png", lambda p: cat.resize((40, 27)).save(p))
    return paths


def _graft_predict(run, paths) -> dict:
    result = CliRunner().invoke(main, ["predict", str(run), *map(str, paths), "--json", "--top-k", "99", "-q"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    return {row["path"]: {t["class"]: t["probability"] for t in row["top"]} for row in rows}


@pytest.mark.parametrize("size, input_type", [(128, "uint8"), (224, "float")])
def test_third_party_reproduces_graft_predict(digits_dir, odd_images, tmp_path, size, input_type):
    from graft.artifacts.export import export_and_verify
    from graft.recipes.frozen import fit_frozen

    run = fit_frozen(digits_dir, tmp_path / "run", image_size=size, progress=False).run_dir
    model_path, _ = export_and_verify(run, tmp_path / "shipped" / "model.onnx", input_type=input_type)
    config = json.loads((run / "model" / "graft.json").read_text())
    paths = list(odd_images.values())

    theirs = third_party_predict(model_path, config, paths)
    ours = _graft_predict(run, paths)
    for path, probabilities in zip(paths, theirs):
        graft_row = np.array([ours[str(path)][c] for c in config["classes"]])
        assert np.argmax(probabilities) == np.argmax(graft_row), path.name
        assert np.abs(probabilities - graft_row).max() < 1e-4, (path.name, np.abs(probabilities - graft_row).max())
    # not a vacuous agreement: the odd images do get different, non-saturated scores
    assert len({int(np.argmax(p)) for p in theirs}) > 1 or theirs.max() < 0.999
