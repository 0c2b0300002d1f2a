"""Hostile files found by trying to break graft from the outside after issue 30: an ICO whose
directory claims 16 x 16 while its PNG claims 12000 x 12000 (PIL decodes it while opening the
file), a progressive JPEG whose scans are repeated thousands of times (each scan decodes the
whole image again), a PNG of 62 MB of text chunks, a WebP (decoded through full-size RGBA canvases),
and `graft predict --csv` on a path holding only a newline or a CR."""
from __future__ import annotations

import csv
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from graft.data.decode import MAX_JPEG_SCANS, WEBP_COST, load_image, read_header
from graft.errors import ImageDecodeError
from graft.serve.onnx_predictor import Batch
from graft.serve.predict import Predictions


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def icon_claiming(side: int) -> bytes:
    """A 16 x 16 ICO entry holding a PNG whose header says side x side grey pixels and whose
    data is not zlib: PIL allocates the full picture and decodes (fails) while opening the icon,
    so reading its header alone must not open it with PIL."""
    png = (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
           + _chunk(b"IDAT", b"not zlib data") + _chunk(b"IEND", b""))
    return struct.pack("<HHH", 0, 1, 1) + struct.pack("<BBBBHHII", 16, 16, 0, 0, 1, 32, len(png), 22) + png


def many_scans(scans: int) -> bytes:
    """A real progressive JPEG with one of its AC scans (a dozen bytes) repeated ``scans`` times."""
    buffer = io.BytesIO()
    photo = np.random.default_rng(0).integers(0, 256, (256, 256, 3), np.uint8)
    Image.fromarray(photo).save(buffer, "JPEG", progressive=True, quality=80)
    data = buffer.getvalue()
    starts = [i for i in range(len(data) - 1) if data[i:i + 2] == b"\xff\xda"]
    last = data[starts[-1]:-2]  # the final scan, up to EOI: a refinement scan libjpeg accepts again
    return data[:-2] + last * scans + b"\xff\xd9"


def test_an_icon_is_measured_by_the_picture_it_embeds():
    icon = icon_claiming(12000)
    header = read_header(icon, name="bomb.ico")  # the old code decoded it here: 'corrupt image data'
    assert (header.format, header.width, header.height) == ("ICO", 12000, 12000)
    assert header.decoded_pixels == 144_000_000
    with pytest.raises(ImageDecodeError, match=r"image too large: 12000 x 12000 pixels exceeds the limit of 16000000"):
        load_image(icon, max_pixels=16_000_000, name="bomb.ico")
    small = io.BytesIO()
    Image.new("RGB", (48, 48), (10, 200, 30)).save(small, "ICO", sizes=[(16, 16), (48, 48)])
    assert read_header(small.getvalue()).decoded_pixels == 48 * 48
    assert load_image(small.getvalue()).getpixel((20, 20)) == (10, 200, 30)


def test_a_jpeg_of_too_many_scans_is_refused_before_decoding():
    assert load_image(many_scans(0)).size == (256, 256)  # the real file, 10 scans, decodes
    assert load_image(many_scans(MAX_JPEG_SCANS - 20)).size == (256, 256)  # libjpeg only warns
    bomb = many_scans(5000)
    for read in (read_header, load_image):
        with pytest.raises(ImageDecodeError, match=r"bomb.jpg: JPEG with 50\d\d scans, over the limit of 100"):
            read(bomb, name="bomb.jpg")


def test_predict_csv_quotes_a_path_holding_only_a_newline_or_a_cr():
    paths = ["ants/new\nline.jpg", "ants/carriage\rreturn.jpg", "plain.jpg"]
    batch = Batch(paths, np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]]), None, None)
    text = "\n".join(Predictions(["ants", "bees"], {None: slice(0, 2)}, batch, "onnx").lines(1, "csv")) + "\n"
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert [row[0] for row in rows[1:]] == paths
    assert [row[2] for row in rows[1:]] == ["ants", "bees", "ants"]


def text_bomb_png() -> bytes:
    """A real 64 x 64 PNG with 62 zTXt chunks before its pixels, each inflating to 1 MB (PIL's
    limits: 1 MB a chunk, 64 MB a file): 66 KB that PIL inflates to 62 MB to read the header."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 100, 50)).save(buffer, "PNG")
    png, text = buffer.getvalue(), zlib.compress(b"a" * (1024 * 1024 - 100), 9)
    chunks = b"".join(_chunk(b"zTXt", b"k%d\x00\x00" % i + text) for i in range(62))
    return png[:33] + chunks + png[33:]  # after the signature and IHDR


def test_a_png_text_bomb_is_refused_without_inflating_it():
    bomb = text_bomb_png()  # PIL inflated 62 MB of it to read the header, and accepted it
    for read in (read_header, load_image):
        with pytest.raises(ImageDecodeError, match=r"t.png: PNG with over 1 MiB of text chunks"):
            read(bomb, name="t.png")
    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "x" * 200_000, zip=True)  # real metadata still reads
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 100, 50)).save(buffer, "PNG", pnginfo=info)
    assert load_image(buffer.getvalue()).getpixel((5, 5)) == (200, 100, 50)


def test_a_webp_counts_its_decoders_canvases():
    buffer = io.BytesIO()
    Image.new("RGB", (300, 200), (10, 200, 30)).save(buffer, "WEBP", lossless=True)
    data = buffer.getvalue()
    header = read_header(data)  # counted 60000 before: PIL decodes it through full-size RGBA canvases
    assert (header.format, header.width, header.height) == ("WEBP", 300, 200)
    assert header.decoded_pixels == WEBP_COST * 60_000 and WEBP_COST >= 2
    assert load_image(data, max_pixels=WEBP_COST * 60_000).getpixel((5, 5)) == (10, 200, 30)
    with pytest.raises(ImageDecodeError, match=r"300 x 200 pixels \(counted 2 times: a WebP"):
        load_image(data, max_pixels=60_000)


def comment_bomb_jpeg() -> bytes:
    """A real 64 x 64 JPEG with 125000 empty comment segments: PIL walks them one by one in Python
    to read its header (0.2 s)."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 100, 50)).save(buffer, "JPEG")
    data = buffer.getvalue()
    return data[:2] + b"\xff\xfe\x00\x02" * 125_000 + data[2:]


def test_headers_are_read_off_the_event_loop(digits_dir, tmp_path_factory):
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    import threading
    import time

    from graft.recipes.frozen import fit_frozen
    from graft.serve.app import create_app
    from graft.serve.runner import load_predictor
    from graft.serve.settings import ServeSettings
    from test_serve import running_server

    run = fit_frozen(digits_dir, tmp_path_factory.mktemp("headers") / "digits", image_size=64, progress=False).run_dir
    digit = sorted(digits_dir.rglob("*.png"))[0].read_bytes()
    bomb = comment_bomb_jpeg()
    assert read_header(bomb).decoded_pixels == 64 * 64
    app = create_app({"d": load_predictor(run)}, ServeSettings(decode_threads=2))
    url = "/v1/models/d/predict"
    took: dict[str, float] = {}
    with running_server(app) as base, httpx.Client(base_url=base, timeout=120) as client:
        assert client.post(url, content=digit).status_code == 200  # warm

        def hostile():
            start = time.monotonic()
            answer = client.post(url, files=[("file", (f"t{i}.jpg", bomb)) for i in range(8)])
            took["hostile"] = time.monotonic() - start
            assert answer.status_code == 200 and len(answer.json()["predictions"]) == 8

        thread = threading.Thread(target=hostile)
        thread.start()
        time.sleep(0.5)  # its 8 headers (0.2 s or more each) are being read
        start = time.monotonic()
        assert client.get("/health").status_code == 200
        took["health"] = time.monotonic() - start
        start = time.monotonic()
        assert "top" in client.post(url, content=digit).json()["predictions"][0]
        took["digit"] = time.monotonic() - start
        thread.join()
    # on the event loop, the whole request's header reading came before both (1.2 s on a quiet machine)
    assert took["health"] < took["hostile"] / 4 and took["digit"] < took["hostile"] / 4, took


def test_a_name_without_a_folder_is_refused(tmp_path, monkeypatch):
    from graft.errors import GraftError
    from graft.serve.models import named_runs

    monkeypatch.chdir(tmp_path)  # the old code served the current folder as model 'x'
    with pytest.raises(GraftError, match=r"x=: no run folder after '='"):
        named_runs(["x="])
    (tmp_path / "run").mkdir()
    assert named_runs(["x=run"]) == {"x": tmp_path.joinpath("run").relative_to(tmp_path)}
