"""Bounded, seeded fuzzing of graft's decode path (issue 30, "What must be shown").

    python bench/bench_fuzz_decode.py [--mutations 3000] [--seed 0] [--cli 200] [--serve 200]

Small real images (crops of hymenoptera / flowers17 photos; scikit-learn's digits where
../shared is absent) are written as JPEG (baseline, progressive, grey), PNG (RGB, palette,
RGBA, 16-bit), GIF, BMP, TIFF (raw, LZW, JPEG-compressed), WebP (lossy, lossless) and ICO
(PNG and BMP entries), then mutated: byte and bit flips, truncation (with the format's end
marker put back, so a cut file still looks closed), header fields overwritten with edge values,
chunks / marker segments duplicated or deleted, slices spliced in. Every mutant goes through

1. ``load_image`` in this process (bytes in memory, a random ``min_side``): it must give an RGB
   image or an ImageDecodeError with a reason; any other exception is a failure;
2. a sample of ``--cli`` mutants through ``graft predict RUN FOLDER --json`` (a tiny fit run):
   every file is a prediction row or an error row with a reason, no traceback;
3. a sample of ``--serve`` mutants posted to a real ``graft serve`` on 127.0.0.1 (httpx): every
   answer is 200, or 4xx with a JSON error; never a 500.

No program may start: a fake ``gs`` (and djpeg, display, xdg-open, ...) that writes a marker
file is put first on PATH for the whole bench and its children, and in this process an audit
hook counts subprocess/exec/spawn/system events during decoding. Prints counts per format and
outcome; exits 1 on any failure. Mutants that failed are kept in --keep (default: none).
"""
from __future__ import annotations

import argparse
import collections
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
from PIL import Image

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
PROCESS_EVENTS = ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
                  "os.forkpty", "os.startfile", "pty.spawn")
FAKE_PROGRAMS = ("gs", "gsc", "gswin32c", "gswin64c", "djpeg", "cjpeg", "display", "eog", "xv", "xdg-open",
                 "open", "see", "feh", "gm", "convert", "magick", "ppmquant", "ppmtogif")
EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif", "WEBP": ".webp",
              "ICO": ".ico", "EPS": ".jpg", "DDS": ".png"}
# Hostile files that are not mutants, added to the CLI and server samples: a real EPS (PIL would
# run Ghostscript on it) and a DDS with an unknown pixel format (NotImplementedError in PIL),
# both named like images graft reads.
EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n%%Title: graft30\n"
       b"newpath 0 0 moveto 10 10 lineto stroke\nshowpage\n%%EOF\n")
TRAILERS = {"JPEG": b"\xff\xd9", "PNG": b"\x00\x00\x00\x00IEND\xaeB`\x82", "GIF": b";"}
EDGE_VALUES = (0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000,
               0xFFFFFFFF)

_watching = {"on": False, "events": []}


def _audit(event: str, args) -> None:
    if _watching["on"] and event.startswith(PROCESS_EVENTS):
        _watching["events"].append((event, repr(args)[:200]))


# --------------------------------------------------------------------------- seed images
def seed_pictures(rng: np.random.Generator, count: int = 8) -> list[Image.Image]:
    """Small RGB crops (48..160 px) of real photos, or of scikit-learn's real digits."""
    photos = sorted((SHARED / "hymenoptera" / "train").glob("*/*.jpg"))[::40] + \
        sorted(SHARED.glob("flowers17/*/*.jpg"))[::170]
    pictures = []
    for path in photos[:count]:
        with Image.open(path) as image:
            image = image.convert("RGB")
        side = int(rng.integers(48, 161))
        left, top = (image.width - side) // 2, (image.height - side) // 2
        pictures.append(image.crop((left, top, left + side, top + int(side * 0.75))))
    if not pictures:
        from sklearn.datasets import load_digits

        for digit in load_digits().images[:count]:
            grey = Image.fromarray(np.uint8(digit * 255 / 16)).resize((64, 64))
            pictures.append(grey.convert("RGB"))
    return pictures


def encodings(picture: Image.Image) -> list[tuple[str, bytes]]:
    """(format, bytes) of one picture in every variant the fuzzer starts from."""
    def save(image, fmt, **options):
        buffer = io.BytesIO()
        image.save(buffer, fmt, **options)
        return fmt, buffer.getvalue()

    rgba = picture.copy()
    rgba.putalpha(Image.linear_gradient("L").resize(picture.size))
    grey16 = Image.fromarray(np.asarray(picture.convert("L"), dtype=np.uint16) * 257)
    palette = picture.quantize(64)
    small = picture.resize((32, 32))
    return [
        save(picture, "JPEG", quality=85), save(picture, "JPEG", quality=80, progressive=True),
        save(picture.convert("L"), "JPEG"), save(picture, "JPEG", subsampling=0, restart_marker_blocks=4),
        save(picture, "PNG"), save(palette, "PNG"), save(rgba, "PNG"), save(grey16, "PNG"),
        save(palette, "GIF"), save(picture, "BMP"), save(palette, "BMP"),
        save(picture, "TIFF"), save(picture, "TIFF", compression="tiff_lzw"),
        save(picture, "TIFF", compression="jpeg"),
        save(picture, "WEBP", quality=80), save(rgba, "WEBP", lossless=True),
        save(small, "ICO", sizes=[(32, 32)]), save(small, "ICO", sizes=[(32, 32)], bitmap_format="bmp"),
    ]


# --------------------------------------------------------------------------- mutations
def _segments(data: bytes, fmt: str) -> list[tuple[int, int]]:
    """(start, end) of the format's chunks: PNG chunks, JPEG marker segments before the scan."""
    spans = []
    if fmt == "PNG":
        position = 8
        while position + 12 <= len(data):
            length = int.from_bytes(data[position:position + 4], "big")
            end = position + 12 + length
            spans.append((position, min(end, len(data))))
            position = end
    elif fmt == "JPEG":
        position = 2
        while position + 4 <= len(data) and data[position] == 0xFF and data[position + 1] != 0xDA:
            end = position + 2 + int.from_bytes(data[position + 2:position + 4], "big")
            spans.append((position, min(end, len(data))))
            position = end
    return spans


def mutate(data: bytes, fmt: str, rng: np.random.Generator) -> tuple[str, bytes]:
    """One mutant of ``data`` and the name of the mutation."""
    kind = str(rng.choice(["byteflip", "bitflip", "truncate", "truncate+end", "header", "duplicate",
                           "delete", "splice"]))
    buffer = bytearray(data)
    size = len(buffer)
    if kind == "byteflip":
        for _ in range(int(rng.integers(1, 9))):
            buffer[int(rng.integers(0, size))] = int(rng.integers(0, 256))
    elif kind == "bitflip":
        for _ in range(int(rng.integers(1, 9))):
            buffer[int(rng.integers(0, size))] ^= 1 << int(rng.integers(0, 8))
    elif kind.startswith("truncate"):
        buffer = buffer[:int(rng.integers(1, size))] + (TRAILERS.get(fmt, b"") if kind == "truncate+end" else b"")
    elif kind == "header":
        width = int(rng.choice([1, 2, 4]))
        value = int(rng.choice(EDGE_VALUES)) if rng.random() < 0.7 else int(rng.integers(0, 2**31))
        offset = int(rng.integers(0, max(1, min(size, 160) - width)))
        order = "big" if rng.random() < 0.5 else "little"
        buffer[offset:offset + width] = (value % (1 << (8 * width))).to_bytes(width, order)
    else:
        spans = _segments(data, fmt)
        if spans and rng.random() < 0.7:
            start, end = spans[int(rng.integers(0, len(spans)))]
        else:
            start = int(rng.integers(0, size))
            end = min(size, start + int(rng.integers(1, 257)))
        if kind == "duplicate":
            buffer[end:end] = data[start:end]
        elif kind == "delete":
            del buffer[start:end]
        else:
            buffer[int(rng.integers(0, size)):int(rng.integers(0, size))] = data[start:end]
    return kind, bytes(buffer)


def hostile_files() -> list[dict]:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 200, 30)).save(buffer, "DDS")
    dds = bytearray(buffer.getvalue())
    dds[80:88] = (4).to_bytes(4, "little") + b"ZZZZ"  # a FourCC pixel format PIL does not know
    return [{"index": 90000 + i, "format": fmt, "mutation": "hostile", "data": data, "min_side": None}
            for i, (fmt, data) in enumerate([("EPS", EPS), ("DDS", bytes(dds))])]


def make_mutants(count: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    bases = [item for picture in seed_pictures(rng) for item in encodings(picture)]
    mutants = []
    for index in range(count):
        fmt, data = bases[int(rng.integers(0, len(bases)))]
        kind, body = mutate(data, fmt, rng)
        mutants.append({"index": index, "format": fmt, "mutation": kind, "data": body,
                        "min_side": [None, 64, 224][int(rng.integers(0, 3))]})
    return mutants


# --------------------------------------------------------------------------- phase 1: in process
def outcome_of(reason: str) -> str:
    """A short class of an ImageDecodeError's reason, for counting."""
    for cut in (":", " ("):
        reason = reason.split(cut)[0]
    return "refused: " + reason[:48]


def in_process(mutants: list[dict], keep: Path | None) -> tuple[collections.Counter, list[dict], float]:
    from graft.data.decode import load_image
    from graft.errors import ImageDecodeError

    counts, failures, slowest = collections.Counter(), [], 0.0
    for mutant in mutants:
        start = time.perf_counter()
        _watching["on"] = True
        try:
            image = load_image(mutant["data"], min_side=mutant["min_side"], name=f"mutant-{mutant['index']}")
            outcome = "decoded" if image.mode == "RGB" and image.size[0] * image.size[1] > 0 else "FAIL: bad image"
        except ImageDecodeError as exc:
            outcome = outcome_of(exc.reason) if exc.reason else "FAIL: no reason"
        except BaseException as exc:  # noqa: BLE001  (anything else is what the fuzzer looks for)
            outcome = f"FAIL: {type(exc).__name__}"
            mutant["traceback"] = traceback.format_exc()
        finally:
            _watching["on"] = False
        slowest = max(slowest, time.perf_counter() - start)
        mutant["outcome"] = outcome
        counts[(mutant["format"], outcome)] += 1
        if outcome.startswith("FAIL"):
            failures.append(mutant)
            if keep:
                keep.mkdir(parents=True, exist_ok=True)
                (keep / f"{mutant['index']}{EXTENSIONS[mutant['format']]}").write_bytes(mutant["data"])
    return counts, failures, slowest


# --------------------------------------------------------------------------- phases 2, 3: CLI and server
def fake_programs(folder: Path) -> Path:
    """A folder of scripts named like the programs PIL can start; each writes a marker file."""
    bin_dir = folder / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in FAKE_PROGRAMS:
        script = bin_dir / name
        script.write_text(f"#!/bin/sh\necho \"$0 $*\" >> {folder / 'STARTED'}\nexit 1\n")
        script.chmod(0o755)
    return bin_dir


def graft_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "graft", *args]


def tiny_run(folder: Path, env: dict) -> Path:
    """A frozen-feature fit on 4 + 4 real images (or digits) at 64 px: the model the CLI and
    server phases predict with."""
    data = folder / "train"
    rng = np.random.default_rng(0)
    for index, picture in enumerate(seed_pictures(rng)):
        target = data / ("a" if index % 2 == 0 else "b") / f"{index}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        picture.save(target)
    run = folder / "run"
    subprocess.run(graft_command("fit", str(data), "--val-split", "0.5", "--image-size", "64", "-o", str(run)),
                   env=env, check=True, capture_output=True, timeout=600)
    return run


def through_cli(run: Path, sample: list[dict], folder: Path, env: dict) -> dict:
    inputs = folder / "cli-inputs"
    inputs.mkdir()
    for mutant in sample:
        (inputs / f"{mutant['index']:05d}{EXTENSIONS[mutant['format']]}").write_bytes(mutant["data"])
    done = subprocess.run(graft_command("predict", str(run), str(inputs), "--json", "-q"), env=env,
                          capture_output=True, text=True, timeout=600)
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    counts = collections.Counter("prediction" if "top" in row or "tasks" in row else
                                 "error row" if row.get("error") else "FAIL: row without reason" for row in rows)
    if len(rows) != len(sample):
        counts[f"FAIL: {len(sample) - len(rows)} files without a row"] += 1
    if "Traceback" in done.stderr:
        counts["FAIL: traceback"] += 1
    return {"exit": done.returncode, "counts": dict(counts)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def through_server(run: Path, sample: list[dict], env: dict) -> dict:
    import httpx

    port = free_port()
    log = tempfile.TemporaryFile(mode="w+")
    server = subprocess.Popen(graft_command("serve", f"fuzz={run}", "--port", str(port)), env=env,
                              stdout=log, stderr=subprocess.STDOUT, text=True)
    base, counts = f"http://127.0.0.1:{port}", collections.Counter()
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        with httpx.Client(timeout=60) as client:
            for mutant in sample:
                name = f"{mutant['index']}{EXTENSIONS[mutant['format']]}"
                answer = client.post(f"{base}/v1/models/fuzz/predict", files={"file": (name, mutant["data"])})
                try:
                    body = answer.json()
                except ValueError:
                    body = None
                ok = answer.status_code == 200 or (400 <= answer.status_code < 500 and isinstance(body, dict)
                                                   and body.get("error"))
                counts[f"{answer.status_code}" if ok else f"FAIL: {answer.status_code} {str(body)[:60]}"] += 1
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.seek(0)
        if "Traceback" in log.read():
            counts["FAIL: traceback in the server's log"] += 1
    return dict(counts)


# --------------------------------------------------------------------------- main
def print_counts(counts: collections.Counter) -> None:
    formats = sorted({fmt for fmt, _ in counts})
    for fmt in formats:
        mine = {outcome: n for (f, outcome), n in counts.items() if f == fmt}
        print(f"  {fmt:5s} {sum(mine.values()):5d}: " + ", ".join(f"{o} {n}" for o, n in sorted(mine.items())))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mutations", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cli", type=int, default=200, help="mutants through graft predict (0: skip)")
    parser.add_argument("--serve", type=int, default=200, help="mutants posted to graft serve (0: skip)")
    parser.add_argument("--keep", type=Path, default=None, help="folder to keep failing mutants in")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="graft-fuzz-"))
    bin_dir = fake_programs(scratch)
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "GRAFT_NO_PROGRESS": "1"}
    sys.addaudithook(_audit)

    start = time.perf_counter()
    mutants = make_mutants(args.mutations, args.seed)
    counts, failures, slowest = in_process(mutants + hostile_files(), args.keep)
    seconds = time.perf_counter() - start
    print(f"in process: {len(mutants)} mutants (seed {args.seed}) in {seconds:.1f} s, slowest {slowest:.2f} s")
    print_counts(counts)
    totals = collections.Counter(o if o in ("decoded",) or o.startswith("FAIL") else "refused"
                                 for (_, o), n in counts.items() for _ in range(n))
    print(f"  total: {dict(totals)}")
    bad = len(failures)
    for mutant in failures[:5]:
        print(f"  FAILURE {mutant['format']} {mutant['mutation']}: {mutant['outcome']}\n{mutant.get('traceback', '')}")
    rng = np.random.default_rng(args.seed + 1)
    if args.cli or args.serve:
        run = tiny_run(scratch, env)
    if args.cli:
        sample = [mutants[i] for i in sorted(rng.choice(len(mutants), min(args.cli, len(mutants)), replace=False))]
        sample += hostile_files()
        result = through_cli(run, sample, scratch, env)
        print(f"graft predict --json: {len(sample)} mutants, exit {result['exit']}: {result['counts']}")
        bad += sum(n for k, n in result["counts"].items() if k.startswith("FAIL"))
    if args.serve:
        sample = [mutants[i] for i in sorted(rng.choice(len(mutants), min(args.serve, len(mutants)), replace=False))]
        sample += hostile_files()
        result = through_server(run, sample, env)
        print(f"graft serve: {len(sample)} mutants posted: {result}")
        bad += sum(n for k, n in result.items() if k.startswith("FAIL"))
    started = (scratch / "STARTED").read_text() if (scratch / "STARTED").exists() else ""
    print(f"programs started: {len(_watching['events'])} in-process events, "
          f"{len(started.splitlines())} fake-program runs {started.splitlines()[:3]}")
    bad += len(_watching["events"]) + len(started.splitlines())
    print("OK" if not bad else f"FAILED: {bad}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
