"""Issue 30: graft decodes only the raster formats it means to read (no EPS, no Ghostscript,
no other program started), every failure is one file's reason, large photos decode by draft,
JPEGs cut short are refused, and file names that are not UTF-8 go through fit/extract."""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import SHARED_DATASETS, needs_shared
from graft.cli import main
from graft.data.decode import FORMATS, load_image, read_header
from graft.errors import ImageDecodeError

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_fuzz_decode.py"
PROGRAMS = ("gs", "gsc", "djpeg", "display", "eog", "xv", "xdg-open", "convert", "magick")
# A real Encapsulated PostScript file (120 bytes): PIL's EPS plugin would hand it to Ghostscript.
EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n%%Title: graft30\n"
       b"newpath 0 0 moveto 10 10 lineto stroke\nshowpage\n%%EOF\n")
_started: list[str] = []
_watch = {"on": False}


def _audit(event: str, args) -> None:
    if _watch["on"] and event.startswith(("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn",
                                          "os.spawn", "os.fork", "os.startfile")):
        _started.append(event)


sys.addaudithook(_audit)  # observes; audit hooks cannot change what happens


@pytest.fixture
def fake_programs(tmp_path, monkeypatch) -> Path:
    """Scripts named like the programs PIL can start, first on PATH; each run leaves a marker."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in PROGRAMS:
        script = bin_dir / name
        script.write_text(f"#!/bin/sh\necho \"$0\" >> {tmp_path / 'STARTED'}\nexit 1\n")
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return tmp_path / "STARTED"


def decode_error(source, **kwargs) -> ImageDecodeError:
    _started.clear()
    _watch["on"] = True
    try:
        with pytest.raises(ImageDecodeError) as info:
            load_image(source, **kwargs)
    finally:
        _watch["on"] = False
    assert not _started, f"decoding started a program: {_started}"
    return info.value


def photo(size=(160, 120)) -> Image.Image:
    """A real photo's centre (or a real digit where ../shared is absent)."""
    paths = sorted((SHARED_DATASETS / "hymenoptera" / "train" / "bees").glob("*.jpg"))
    if paths:
        with Image.open(paths[0]) as image:
            return image.convert("RGB").resize(size)
    from sklearn.datasets import load_digits

    return Image.fromarray(np.uint8(load_digits().images[0] * 15)).resize(size).convert("RGB")


def test_eps_is_refused_from_its_bytes_and_no_program_starts(tmp_path, fake_programs):
    path = tmp_path / "drawing.jpg"  # the name says JPEG: the bytes decide
    path.write_bytes(EPS)
    assert len(EPS) == 120
    with path.open("rb") as stream:
        for source in (path, str(path), EPS, stream):
            reason = decode_error(source).reason
            assert reason.startswith("not a supported image format (EPS; graft reads JPEG, PNG"), reason
    assert decode_error(EPS, name="upload.eps").path == "upload.eps"
    with pytest.raises(ImageDecodeError, match="not a supported image format"):
        read_header(path)
    assert not fake_programs.exists()


def test_other_formats_are_named_and_refused_even_when_corrupt(tmp_path):
    # A corrupt DDS (unknown pixel format) raised NotImplementedError, a traceback in fit and
    # predict; JPEG 2000 goes to OpenJPEG. Neither is opened now.
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 200, 30)).save(buffer, "DDS")
    dds = bytearray(buffer.getvalue())
    dds[80:88] = (4).to_bytes(4, "little") + b"ZZZZ"
    assert decode_error(bytes(dds)).reason.startswith("not a supported image format (DDS;")
    buffer = io.BytesIO()
    photo().save(buffer, "JPEG2000")
    assert decode_error(buffer.getvalue()).reason.startswith("not a supported image format (JPEG2000;")
    assert decode_error(b"plain text, not a picture\n" * 4).reason == "not an image (unrecognised format)"


@pytest.mark.parametrize("fmt, options", [
    ("JPEG", {}), ("JPEG", {"progressive": True}), ("PNG", {}), ("GIF", {}), ("BMP", {}), ("TIFF", {}),
    ("TIFF", {"compression": "tiff_lzw"}), ("WEBP", {"lossless": True}), ("ICO", {"sizes": [(48, 48)]}),
    ("PPM", {}),
])
def test_every_allowed_format_decodes_alike_from_a_path_bytes_and_a_stream(tmp_path, fmt, options):
    path = tmp_path / f"x.{fmt.lower()}"
    photo((48, 48)).save(path, fmt, **options)
    data = path.read_bytes()
    expected = np.asarray(load_image(path))
    assert expected.shape == (48, 48, 3) and expected.std() > 5
    assert np.array_equal(np.asarray(load_image(data)), expected)
    with path.open("rb") as stream:
        assert np.array_equal(np.asarray(load_image(stream)), expected)
    assert read_header(data).format in FORMATS + ("MPO",)


def test_a_large_photo_is_decoded_by_draft_and_bombs_without_draft_are_refused(tmp_path):
    # 12000 x 9000 = 108 Mpx, above PIL's 89.5 Mpx limit: read for a 256 px model it decodes at 1/8.
    big = tmp_path / "big.jpg"
    Image.linear_gradient("L").resize((12000, 9000)).save(big, quality=50)
    assert load_image(big, min_side=256).size == (1500, 1125)
    assert read_header(big, min_side=256).decoded_pixels == 1500 * 1125
    assert decode_error(big).reason.startswith("image too large: 12000 x 9000 pixels exceeds")
    # Without a draft mode PNG pays in full: refused from its header, min_side or not.
    bomb = tmp_path / "bomb.png"
    Image.new("1", (12000, 9000)).save(bomb)
    assert decode_error(bomb, min_side=256).reason.startswith("image too large: 12000 x 9000")
    # A progressive JPEG buffers every coefficient at full size: its draft does not count.
    small = photo((400, 300))
    small.save(tmp_path / "base.jpg")
    small.save(tmp_path / "prog.jpg", progressive=True)
    assert load_image(tmp_path / "base.jpg", min_side=64, max_pixels=20_000).size == (100, 75)
    reason = decode_error(tmp_path / "prog.jpg", min_side=64, max_pixels=20_000).reason
    assert reason.startswith("image too large: 400 x 300 pixels exceeds the limit of 20000")


def test_the_pre_training_check_keeps_a_large_photo_and_still_refuses_a_bomb(tmp_path):
    # finetune / distill / adapt / multitask check every image before training (readable_images).
    from graft.data.datasets import readable_images
    from graft.data.folders import scan_folder

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        photo((64, 48)).save(tmp_path / name / "small.jpg")
    Image.linear_gradient("L").resize((12000, 9000)).save(tmp_path / "a" / "big.jpg", quality=50)
    Image.new("1", (12000, 9000)).save(tmp_path / "b" / "bomb.png")
    kept, skipped = readable_images(scan_folder(tmp_path), strict=False, progress=False)
    assert sorted(Path(p).name for p in kept.paths) == ["big.jpg", "small.jpg", "small.jpg"]
    assert [Path(s["path"]).name for s in skipped] == ["bomb.png"]


@needs_shared
def test_a_jpeg_cut_short_but_closed_by_eoi_is_refused(tmp_path):
    source = sorted((SHARED_DATASETS / "hymenoptera" / "train" / "bees").glob("*.jpg"))[0]
    data = source.read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 10] + b"\xff\xd9")  # libjpeg decodes this without an error
    reason = decode_error(cut, min_side=224).reason
    assert reason.startswith("corrupt JPEG: its data ends early, the bottom "), reason
    assert load_image(source, min_side=224).size[0] > 0  # the whole photo is fine
    grey = tmp_path / "grey.jpg"
    Image.new("RGB", (64, 48), (128, 128, 128)).save(grey)  # all grey: nothing to tell it from
    assert load_image(grey).getpixel((0, 47)) == (128, 128, 128)


def test_seeded_fuzzing_in_process_finds_no_other_exception_and_starts_nothing():
    done = subprocess.run([sys.executable, str(BENCH), "--mutations", "400", "--seed", "3", "--cli", "0",
                           "--serve", "0"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "in process: 400 mutants" in done.stdout and "decoded" in done.stdout and "refused" in done.stdout
    assert "programs started: 0 in-process events, 0 fake-program runs" in done.stdout


def _graft(*args, env) -> subprocess.CompletedProcess:
    code = "import sys; from graft.cli import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=env, timeout=600)


@needs_shared
def test_hostile_files_and_latin1_names_through_the_cli(tmp_path, fake_programs, hymenoptera_small):
    """graft fit in its own process (PATH with the fake programs); extract and predict in this one."""
    train, _ = hymenoptera_small
    data = tmp_path / "data"
    for name in ("ants", "bees"):
        (data / name).mkdir(parents=True)
        for image in sorted((train / name).iterdir())[:3]:
            (data / name / image.name).write_bytes(image.read_bytes())
    latin1 = os.fsencode(data / "ants") + b"/caf\xe9.jpg"  # not valid UTF-8
    other = sorted((train / "ants").iterdir())[5].read_bytes()
    with open(latin1, "wb") as handle:
        handle.write(other)
    (data / "bees" / "drawing.jpg").write_bytes(EPS)
    photo_bytes = sorted((train / "bees").iterdir())[5].read_bytes()
    (data / "bees" / "cut.jpg").write_bytes(photo_bytes[: len(photo_bytes) // 10] + b"\xff\xd9")
    env = {**os.environ, "GRAFT_NO_PROGRESS": "1"}

    extracted = CliRunner().invoke(main, ["extract", str(data), "-o", str(tmp_path / "f.npz")])
    assert extracted.exit_code == 0, extracted.output
    assert "not a supported image format (EPS" in extracted.output and "corrupt JPEG" in extracted.output
    with np.load(tmp_path / "f.npz") as saved:
        assert os.fsdecode(latin1) in list(saved["paths"]) and len(saved["paths"]) == 7

    run = tmp_path / "run"
    fitted = _graft("fit", str(data), "--val-split", "0.5", "--image-size", "64", "-o", str(run), env=env)
    assert fitted.returncode == 0, fitted.stderr
    with open(run / "split.csv", newline="", errors="surrogateescape") as handle:
        listed = [row[0] for row in csv.reader(handle)]
    assert os.fsdecode(latin1) in listed and os.path.exists(os.fsdecode(latin1))

    predicted = CliRunner().invoke(main, ["predict", str(run), str(data), "--json", "-q"])
    rows = {Path(row["path"]).name: row for row in map(json.loads, predicted.stdout.splitlines())}
    assert rows["drawing.jpg"]["error"].startswith("not a supported image format (EPS")
    assert rows["cut.jpg"]["error"].startswith("corrupt JPEG")
    assert sum("top" in row for row in rows.values()) == 7
    assert "Traceback" not in fitted.stderr and extracted.exception is None
    assert predicted.exit_code in (0, 1) and isinstance(predicted.exception, (SystemExit, type(None)))
    assert not fake_programs.exists(), fake_programs.read_text()
