"""Tests for graft.data.folders: scanning class folders, splitting, and decoding images to RGB.

Every image is made here with PIL in tmp_path and kept tiny, except where size is the point.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from graft.data.folders import (
    IMAGE_SUFFIXES,
    Record,
    load_image,
    load_train_val,
    scan_folder,
    stratified_split,
)
from graft.errors import DataError, ImageDecodeError


def save_rgb(path: Path, colour=(10, 20, 30), size=(8, 6)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def make_tree(root: Path, counts: dict[str, int]) -> Path:
    """root/<class>/img<i>.png with counts[class] images each."""
    for name, n in counts.items():
        for i in range(n):
            save_rgb(root / name / f"img{i:02d}.png")
    return root


# ---------------------------------------------------------------- scan_folder


def test_scan_good_tree(tmp_path):
    root = make_tree(tmp_path / "train", {"dog": 2, "cat": 3})
    save_rgb(root / "dog" / "nested" / "deeper" / "x.png")
    (root / "cat" / ".DS_Store").write_bytes(b"meta")
    (root / "dog" / ".hidden_dir").mkdir()
    save_rgb(root / "dog" / ".hidden_dir" / "y.png")
    (root / ".git").mkdir()
    save_rgb(root / ".git" / "z.png")
    (root / "README.txt").write_text("loose file at root level")
    (root / "cat" / "notes.txt").write_text("not an image, still listed")

    folder = scan_folder(root)

    assert folder.root == root.absolute()
    assert folder.classes == ["cat", "dog"]
    assert folder.class_counts() == {"cat": 4, "dog": 3}
    assert len(folder) == 7
    assert folder.labels.dtype == np.int64
    assert folder.labels.tolist() == [0, 0, 0, 0, 1, 1, 1]
    names = [p.relative_to(root).as_posix() for p in folder.paths]
    assert names == [
        "cat/img00.png", "cat/img01.png", "cat/img02.png", "cat/notes.txt",
        "dog/img00.png", "dog/img01.png", "dog/nested/deeper/x.png",
    ]
    assert all(p.is_absolute() for p in folder.paths)
    assert folder.records == sorted(folder.records, key=lambda r: (r.label, r.path))
    assert isinstance(folder.records[0], Record)
    assert ".png" in IMAGE_SUFFIXES and ".jpg" in IMAGE_SUFFIXES


def test_scan_relative_root_gives_absolute_paths(tmp_path, monkeypatch):
    make_tree(tmp_path / "data", {"a": 1, "b": 1})
    monkeypatch.chdir(tmp_path)
    folder = scan_folder("data")
    assert folder.root == tmp_path / "data"
    assert all(p.is_absolute() and p.exists() for p in folder.paths)


def test_subset_and_counts(tmp_path):
    folder = scan_folder(make_tree(tmp_path, {"a": 3, "b": 2}))
    sub = folder.subset([4, 0])
    assert sub.root == folder.root and sub.classes == folder.classes
    assert sub.records == [folder.records[4], folder.records[0]]
    assert sub.labels.tolist() == [1, 0]
    assert folder.subset(np.array([True, False, False, True, False])).records == [
        folder.records[0], folder.records[3]
    ]
    empty = folder.subset([])
    assert len(empty) == 0
    assert empty.class_counts() == {"a": 0, "b": 0}


def test_scan_missing_root(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(DataError, match="does not exist") as info:
        scan_folder(missing)
    assert str(missing) in str(info.value)


def test_scan_file_as_root(tmp_path):
    file = save_rgb(tmp_path / "img.png")
    with pytest.raises(DataError, match="not a folder") as info:
        scan_folder(file)
    assert str(file) in str(info.value)


def test_scan_no_class_folders(tmp_path):
    save_rgb(tmp_path / "loose.png")
    with pytest.raises(DataError) as info:
        scan_folder(tmp_path)
    message = str(info.value)
    assert "no class folders" in message
    assert "<class>/<image>" in message
    assert str(tmp_path) in message


def test_scan_empty_class_named(tmp_path):
    make_tree(tmp_path, {"full": 2})
    (tmp_path / "empty_one" / "sub").mkdir(parents=True)
    (tmp_path / "empty_one" / ".DS_Store").write_bytes(b"x")  # hidden files do not count
    with pytest.raises(DataError, match="'empty_one'.*empty class"):
        scan_folder(tmp_path)


def test_scan_single_class(tmp_path):
    make_tree(tmp_path, {"only": 2})
    with pytest.raises(DataError) as info:
        scan_folder(tmp_path)
    assert f"found only one class 'only' in {tmp_path}" in str(info.value)
    assert "at least two" in str(info.value)


def test_scan_with_classes_labels_follow_list(tmp_path):
    make_tree(tmp_path, {"b": 1, "c": 2})  # "a" missing: allowed for a val set
    folder = scan_folder(tmp_path, classes=["c", "a", "b"])
    assert folder.classes == ["c", "a", "b"]
    assert folder.labels.tolist() == [0, 0, 2]
    assert folder.class_counts() == {"c": 2, "a": 0, "b": 1}


def test_scan_with_classes_single_class_ok(tmp_path):
    make_tree(tmp_path, {"b": 1})
    folder = scan_folder(tmp_path, classes=["a", "b"])
    assert folder.labels.tolist() == [1]


def test_scan_with_classes_unknown_folder(tmp_path):
    make_tree(tmp_path, {"a": 1, "zebra": 1})
    with pytest.raises(DataError) as info:
        scan_folder(tmp_path, classes=["a", "b"])
    message = str(info.value)
    assert "'zebra'" in message and "'a'" in message and "'b'" in message


def test_scored_folder_empty_class_is_a_missing_class(tmp_path):
    """A validation/test/evaluate folder: an empty class folder is warned as a missing one is
    (issue 20 #14); a training tree's empty class stays an error; all empty is an error."""
    make_tree(tmp_path / "train", {"a": 2, "b": 2})
    for val, made in (("empty", True), ("missing", False)):
        save_rgb(tmp_path / val / "a" / "img.png", colour=(200, 0, 0))
        if made:
            (tmp_path / val / "b").mkdir()
        with pytest.warns(UserWarning, match=f"class\\(es\\) 'b' have no validation images in {tmp_path / val}"):
            _, scored = load_train_val(tmp_path / "train", val_dir=tmp_path / val)
        assert scored.class_counts() == {"a": 1, "b": 0}
    (tmp_path / "none" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="no files in the class folders of"):
        scan_folder(tmp_path / "none", classes=["a", "b"])


def _both_forms(root: Path, name: str, counts=(2, 1)) -> tuple[str, str]:
    """``name`` as two folders, composed (NFC) and decomposed (NFD), as macOS writes it."""
    import unicodedata

    composed, decomposed = unicodedata.normalize("NFC", name), unicodedata.normalize("NFD", name)
    assert composed != decomposed
    for form, n in zip((composed, decomposed), counts):
        for i in range(n):
            save_rgb(root / form / f"{len(form)}-{i}.png")
    assert len([p for p in root.iterdir() if p.is_dir()]) >= 2  # the file system kept both
    return composed, decomposed


def test_class_names_in_two_unicode_forms_are_one_class(tmp_path):
    """Issue 20 #10: NFC "Ämeisen" and NFD "Ämeisen" folders are one class, everywhere names meet."""
    composed, decomposed = _both_forms(tmp_path / "train", "Ämeisen")
    make_tree(tmp_path / "train", {"Bienen": 2})
    with pytest.warns(UserWarning, match="named 'Ämeisen' in different Unicode forms"):
        folder = scan_folder(tmp_path / "train")
    assert folder.classes == ["Bienen", composed]
    assert folder.class_counts() == {"Bienen": 2, composed: 3}
    # a validation folder written in the other form, and a class list in it, match the same class
    make_tree(tmp_path / "val", {decomposed: 1, "Bienen": 1})
    val = scan_folder(tmp_path / "val", classes=[decomposed, "Bienen"])
    assert val.classes == [composed, "Bienen"] and val.labels.tolist() == [0, 1]
    assert scan_folder(tmp_path / "val", classes=folder.classes).labels.tolist() == [0, 1]


# ---------------------------------------------------------------- stratified_split


def test_split_stratified_sizes(tmp_path):
    folder = scan_folder(make_tree(tmp_path, {"a": 10, "b": 4, "c": 2}))
    train, val = stratified_split(folder, 0.25, seed=0)
    # round(10*.25)=2 (banker's rounding of 2.5), round(4*.25)=1, round(.5)=0 -> at least 1
    assert val.class_counts() == {"a": 2, "b": 1, "c": 1}
    assert train.class_counts() == {"a": 8, "b": 3, "c": 1}
    assert set(train.paths).isdisjoint(val.paths)
    assert sorted(train.paths + val.paths) == sorted(folder.paths)
    for part in (train, val):
        assert part.root == folder.root and part.classes == folder.classes
        assert part.records == sorted(part.records, key=lambda r: (r.label, r.path))


def test_split_keeps_one_in_train_at_high_fraction(tmp_path):
    folder = scan_folder(make_tree(tmp_path, {"a": 3, "b": 2}))
    train, val = stratified_split(folder, 0.99)
    assert train.class_counts() == {"a": 1, "b": 1}
    assert val.class_counts() == {"a": 2, "b": 1}


def test_split_deterministic_and_seeded(tmp_path):
    folder = scan_folder(make_tree(tmp_path, {"a": 20, "b": 20}))
    first = stratified_split(folder, 0.3, seed=1)[1].paths
    assert stratified_split(folder, 0.3, seed=1)[1].paths == first
    others = {tuple(stratified_split(folder, 0.3, seed=s)[1].paths) for s in range(2, 6)}
    assert any(o != tuple(first) for o in others)


def test_split_single_image_class_warns(tmp_path):
    folder = scan_folder(make_tree(tmp_path, {"lonely": 1, "many": 4}))
    with pytest.warns(UserWarning, match="'lonely'"):
        train, val = stratified_split(folder, 0.5)
    assert train.class_counts()["lonely"] == 1
    assert val.class_counts() == {"lonely": 0, "many": 2}


def test_split_no_warning_when_all_classes_splittable(tmp_path):
    folder = scan_folder(make_tree(tmp_path, {"a": 2, "b": 2}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stratified_split(folder, 0.5)


@pytest.mark.parametrize("fraction", [0, 1, -0.1, 1.5, float("nan")])
def test_split_bad_fraction(tmp_path, fraction):
    folder = scan_folder(make_tree(tmp_path, {"a": 2, "b": 2}))
    with pytest.raises(DataError, match="val_fraction"):
        stratified_split(folder, fraction)


# ---------------------------------------------------------------- load_train_val


def test_load_train_val_modes(tmp_path):
    train_dir = make_tree(tmp_path / "train", {"a": 4, "b": 4})
    val_dir = make_tree(tmp_path / "val", {"b": 2})

    train, val = load_train_val(train_dir)
    assert len(train) == 8 and val is None

    train, val = load_train_val(train_dir, val_dir=val_dir)
    assert len(train) == 8
    assert val.classes == ["a", "b"] and val.labels.tolist() == [1, 1]

    train, val = load_train_val(train_dir, val_fraction=0.5, seed=3)
    assert train.class_counts() == {"a": 2, "b": 2} == val.class_counts()


def test_load_train_val_exclusive(tmp_path):
    train_dir = make_tree(tmp_path / "train", {"a": 2, "b": 2})
    val_dir = make_tree(tmp_path / "val", {"a": 1})
    with pytest.raises(DataError, match="not both"):
        load_train_val(train_dir, val_dir=val_dir, val_fraction=0.2)


def test_load_train_val_same_folder_rejected(tmp_path):
    train_dir = make_tree(tmp_path / "train", {"a": 2, "b": 2})
    with pytest.raises(DataError, match="is the training folder"):
        load_train_val(train_dir, val_dir=train_dir)


def test_load_train_val_unknown_val_class(tmp_path):
    train_dir = make_tree(tmp_path / "train", {"a": 2, "b": 2})
    val_dir = make_tree(tmp_path / "val", {"c": 1})
    with pytest.raises(DataError, match="'c'"):
        load_train_val(train_dir, val_dir=val_dir)


# ---------------------------------------------------------------- load_image: modes


def pixel(image: Image.Image, xy=(0, 0)):
    assert image.mode == "RGB"
    return image.getpixel(xy)


def test_load_rgb(tmp_path):
    path = save_rgb(tmp_path / "x.png", colour=(200, 100, 50), size=(7, 5))
    image = load_image(path)
    assert image.size == (7, 5)
    assert pixel(image) == (200, 100, 50)


def test_load_grayscale_L(tmp_path):
    path = tmp_path / "g.png"
    Image.new("L", (4, 4), 77).save(path)
    assert pixel(load_image(path)) == (77, 77, 77)


def test_load_one_bit(tmp_path):
    path = tmp_path / "b.png"
    image = Image.new("1", (4, 4), 0)
    image.putpixel((1, 1), 1)
    image.save(path)
    loaded = load_image(path)
    assert pixel(loaded) == (0, 0, 0)
    assert pixel(loaded, (1, 1)) == (255, 255, 255)


def test_load_palette_with_transparency(tmp_path):
    path = tmp_path / "p.png"
    image = Image.new("P", (4, 4), 0)
    # index 0 = black (declared transparent), index 1 = red
    image.putpalette([0, 0, 0, 255, 0, 0] + [0, 0, 0] * 254)
    image.putpixel((2, 2), 1)
    image.save(path, transparency=0)
    loaded = load_image(path)
    assert pixel(loaded) == (255, 255, 255)  # transparent black reads as white, not black
    assert pixel(loaded, (2, 2)) == (255, 0, 0)


def test_load_rgba_over_white(tmp_path):
    path = tmp_path / "a.png"
    image = Image.new("RGBA", (4, 4), (0, 0, 0, 0))  # transparent *black*
    image.putpixel((1, 1), (0, 0, 255, 255))
    image.putpixel((2, 2), (0, 0, 0, 128))  # half-transparent black -> mid grey
    image.save(path)
    loaded = load_image(path)
    assert pixel(loaded) == (255, 255, 255)
    assert pixel(loaded, (1, 1)) == (0, 0, 255)
    assert all(120 <= c <= 135 for c in pixel(loaded, (2, 2)))


def test_load_la_over_white(tmp_path):
    path = tmp_path / "la.png"
    Image.new("LA", (3, 3), (0, 0)).save(path)
    assert pixel(load_image(path)) == (255, 255, 255)


def test_load_cmyk_jpeg(tmp_path):
    path = tmp_path / "c.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path, quality=95)  # red in CMYK
    with Image.open(path) as raw:
        assert raw.mode == "CMYK"
    r, g, b = pixel(load_image(path), (8, 8))
    assert r > 200 and g < 60 and b < 60


def test_load_16bit_grayscale_png(tmp_path):
    path = tmp_path / "g16.png"
    Image.fromarray(np.full((4, 4), 32896, dtype=np.uint16)).save(path)
    with Image.open(path) as raw:
        assert raw.mode.startswith("I")  # really stored and read as 16-bit
    r, g, b = pixel(load_image(path))
    assert abs(r - 128) <= 1 and r == g == b  # PIL's plain convert would give 255


def test_load_32bit_int_with_16bit_range(tmp_path):
    path = tmp_path / "i32.tif"
    Image.fromarray(np.full((4, 4), 32896, dtype=np.int32), mode="I").save(path)
    with Image.open(path) as raw:
        assert raw.mode == "I"
    assert pixel(load_image(path)) == (128, 128, 128)  # scaled as 16-bit, not clipped
    path_small = tmp_path / "i32small.tif"
    Image.fromarray(np.full((4, 4), 100, dtype=np.int32), mode="I").save(path_small)
    assert pixel(load_image(path_small)) == (100, 100, 100)


def test_load_float_unit_range(tmp_path):
    path = tmp_path / "f.tif"
    Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32), mode="F").save(path)
    assert abs(pixel(load_image(path))[0] - 128) <= 1


def test_load_exif_rotated_jpeg(tmp_path):
    path = tmp_path / "rot.jpg"
    image = Image.new("RGB", (40, 20), (0, 200, 0))
    exif = Image.Exif()
    exif[0x0112] = 6
    image.save(path, exif=exif)
    loaded = load_image(path)
    assert loaded.size == (20, 40)


def test_load_gif_first_frame(tmp_path):
    path = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (6, 6), c) for c in [(255, 0, 0), (0, 0, 255)]]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    with Image.open(path) as raw:
        assert raw.n_frames == 2
    r, g, b = pixel(load_image(path))
    assert r > 200 and b < 60


def test_load_multipage_tiff_first_page(tmp_path):
    path = tmp_path / "pages.tif"
    pages = [Image.new("RGB", (5, 5), c) for c in [(0, 255, 0), (255, 0, 0)]]
    pages[0].save(path, save_all=True, append_images=pages[1:])
    assert pixel(load_image(path)) == (0, 255, 0)


def test_loaded_image_is_detached_from_file(tmp_path):
    path = save_rgb(tmp_path / "x.png", colour=(1, 2, 3))
    image = load_image(path)
    os.remove(path)  # still usable: pixels are in memory and the file handle is closed
    assert pixel(image) == (1, 2, 3)
    assert image.copy().size == (8, 6)


# ---------------------------------------------------------------- load_image: failures


def decode_error(path, **kwargs) -> ImageDecodeError:
    with pytest.raises(ImageDecodeError) as info:
        load_image(path, **kwargs)
    assert isinstance(info.value, DataError)
    assert info.value.path == str(path)
    return info.value


def test_load_zero_bytes(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    assert decode_error(path).reason == "empty file (0 bytes)"


def test_load_text_named_jpg(tmp_path):
    path = tmp_path / "text.jpg"
    path.write_text("this is not an image\n" * 10)
    assert decode_error(path).reason == "not an image (unrecognised format)"


def test_load_missing_file(tmp_path):
    assert decode_error(tmp_path / "gone.png").reason == "file not found"


def test_load_directory(tmp_path):
    (tmp_path / "d.png").mkdir()
    assert decode_error(tmp_path / "d.png").reason == "not a regular file"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs non-root posix")
def test_load_permission_denied(tmp_path):
    path = save_rgb(tmp_path / "locked.png")
    path.chmod(0)
    try:
        assert "ermission" in decode_error(path).reason
    finally:
        path.chmod(0o644)


def test_load_permission_error_from_open(tmp_path, monkeypatch):
    # Works as root too (where chmod cannot deny reading): the error comes from the open.
    path = save_rgb(tmp_path / "x.png")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(Image, "open", refuse)
    assert decode_error(path).reason == "cannot read file: Permission denied"


def test_load_truncated_jpeg(tmp_path):
    path = tmp_path / "cut.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path, quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    reason = decode_error(path).reason
    assert reason.startswith("truncated or corrupt image data: ")
    assert len(reason) > len("truncated or corrupt image data: ")


def test_load_bomb_with_small_limit(tmp_path):
    path = save_rgb(tmp_path / "big.png", size=(100, 100))
    reason = decode_error(path, max_pixels=5000).reason
    assert reason == (
        "image too large: 100 x 100 pixels exceeds the limit of 5000 (possible decompression bomb)"
    )
    assert load_image(path, max_pixels=10000).size == (100, 100)  # at the limit is fine


def test_load_bomb_default_limit(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("1", (12000, 12000)).save(path)  # 144 Mpx, a few KB on disk
    assert path.stat().st_size < 1_000_000
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning leaks out either
        reason = decode_error(path).reason
    assert reason.startswith("image too large: 12000 x 12000 pixels")
    assert str(Image.MAX_IMAGE_PIXELS) in reason


def test_load_pil_hard_bomb_error_reported(tmp_path, monkeypatch):
    # Above twice PIL's own limit PIL refuses in Image.open; a larger max_pixels cannot
    # override that, and the refusal must still come out as an ImageDecodeError.
    path = save_rgb(tmp_path / "x.png", size=(100, 100))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    reason = decode_error(path, max_pixels=10**9).reason
    assert reason.startswith("image too large:") and "decompression bomb" in reason


# ---------------------------------------------------------------- load_image: draft


def test_draft_mode_for_large_jpeg(tmp_path):
    path = tmp_path / "large.jpg"
    Image.new("RGB", (2000, 1000), (90, 140, 200)).save(path, quality=80)
    drafted = load_image(path, min_side=256)
    assert drafted.mode == "RGB"
    assert 256 <= min(drafted.size) < 1000
    assert drafted.size[0] == 2 * drafted.size[1]
    assert load_image(path).size == (2000, 1000)
    assert load_image(path, min_side=5000).size == (2000, 1000)  # never enlarges


def test_draft_keeps_exif_rotation(tmp_path):
    path = tmp_path / "rot_large.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (1200, 600), (0, 0, 0)).save(path, exif=exif)
    drafted = load_image(path, min_side=100)
    width, height = drafted.size
    assert height == 2 * width  # rotated to portrait
    assert 100 <= width < 600


def test_draft_ignored_for_png(tmp_path):
    path = save_rgb(tmp_path / "p.png", size=(600, 300))
    assert load_image(path, min_side=64).size == (600, 300)


@pytest.mark.parametrize("augment, mirrors", [("crop", False), ("crop-flip", True)])
def test_crop_augmentation_never_mirrors_and_crop_flip_does(tmp_path, augment, mirrors):
    """Digits and text need scale variation without mirroring (a mirrored 2 is no 2)."""
    import torch

    from graft.data.datasets import ImageDataset
    from graft.data.preprocess import Preprocessing

    pixels = np.zeros((64, 64, 3), np.uint8)
    pixels[:, :32] = 255  # bright left half, dark right half
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        Image.fromarray(pixels).save(tmp_path / name / "half.png")
    dataset = ImageDataset(scan_folder(tmp_path), Preprocessing(size=32), augment)
    torch.manual_seed(0)
    flipped = 0
    for _ in range(40):
        image, _ = dataset[0]
        left, right = image[:, :, :16].mean(), image[:, :, 16:].mean()
        flipped += int(right > left)
    assert (flipped > 0) == mirrors, flipped
