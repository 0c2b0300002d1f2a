"""`graft serve` under load with hostile requests mixed in (issue 30), bounded, 127.0.0.1 only.

    python bench/bench_serve_hostile.py --run RUN --images DIR [--requests 600] [--concurrency 8]
        [--hostile-fraction 0.1]

Starts `graft serve m=RUN` on a free port and sends --requests good requests (one real photo
each, the raw body) at --concurrency, twice: a clean pass, then a pass where every
1/--hostile-fraction-th request is a hostile one instead, cycling over the kinds below. The
good requests' p99 latency of the hostile pass over the clean pass's is the figure (the bar:
at most 2). Each hostile kind must get its expected answer; every good one its class.

Hostile kinds: ``bombs`` six 86 KB grey PNGs of 9400 x 9400 (88 Mpx each, under PIL's own
limit) in one request; ``over-budget`` five 4000 x 4000 grey PNGs (16 Mpx each, 80 Mpx in
all); ``heavy`` one 4000 x 4000 grey PNG (allowed: decoded at full price); ``bomb+photo`` a
bomb beside a good photo (the photo answered); ``eps`` a 120-byte EPS; ``text``;
``truncated-jpeg``; ``cut-multipart`` (no closing boundary); ``30MB-body``; ``leaver`` four
16 Mpx PNGs whose client disconnects 50 ms after sending them (the server drops the work).
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import free_port, rss_mb, start_server  # noqa: E402
from common import save_rows  # noqa: E402

EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n%%EndComments\n"
       b"newpath 0 0 moveto 10 10 lineto stroke showpage\n%%EOF\n")


def grey_png(side: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (side, side), 128).save(buffer, "PNG")
    return buffer.getvalue()


def multipart(parts: list[tuple[str, bytes]], boundary: str = "graftbench", close: bool = True) -> bytes:
    body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
                    "Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n" for name, data in parts)
    return body + (f"--{boundary}--\r\n".encode() if close else b"")


def hostile_kinds(photo: bytes) -> dict:
    """kind -> (headers, body, check(status, answer) -> bool); ``leaver`` is sent by hand."""
    bomb, big = grey_png(9400), grey_png(4000)
    form = {"Content-Type": "multipart/form-data; boundary=graftbench"}

    def all_errors(status, data):
        return status == 400 and all("error" in row for row in data.get("predictions", []))

    def only_first(status, data):
        rows = data.get("predictions", [])
        return status == 200 and "top" in rows[0] and "error" in rows[1]

    return {
        "bombs": (form, multipart([(f"bomb{i}.png", bomb) for i in range(6)]), all_errors),
        "over-budget": (form, multipart([(f"big{i}.png", big) for i in range(5)]), lambda s, d: s == 413),
        "heavy": ({}, big, lambda s, d: s == 200),
        "bomb+photo": (form, multipart([("photo.jpg", photo), ("bomb.png", bomb)]), only_first),
        "eps": ({}, EPS, lambda s, d: s == 400),
        "text": ({}, b"just some text, not a picture\n" * 10, lambda s, d: s == 400),
        "truncated-jpeg": ({}, photo[: len(photo) // 3], lambda s, d: s == 400),
        "cut-multipart": (form, multipart([("a.jpg", photo)], close=False), lambda s, d: s == 400),
        "30MB-body": ({}, os.urandom(30 * 2**20), lambda s, d: s == 413),
        "leaver": (form, multipart([(f"big{i}.png", big) for i in range(4)]), None),
    }


async def leave_early(port: int, headers: dict, body: bytes) -> None:
    """Send a request and disconnect 50 ms later, before the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(f"POST /v1/models/m/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
                 f"{head}\r\n".encode() + body)
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.close()


async def load(port: int, plan: list, concurrency: int) -> list[dict]:
    """Send ``plan`` ((kind, headers, body, expected class or check)) with ``concurrency`` in flight."""
    import httpx

    url, rows, order = f"http://127.0.0.1:{port}/v1/models/m/predict", [], iter(plan)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:
        async def worker():
            for kind, headers, body, expect in order:
                start = time.perf_counter()
                if kind == "leaver":
                    await leave_early(port, headers, body)
                    rows.append({"kind": kind, "status": None, "ok": True, "seconds": 0.0, "error": None})
                    continue
                try:
                    answer = await client.post(url, content=body, headers=headers, params={"top_k": 1})
                    status, data = answer.status_code, answer.json()
                except (httpx.HTTPError, ValueError) as exc:
                    status, data = None, {"error": f"{type(exc).__name__}: {exc}"}
                seconds = time.perf_counter() - start
                if kind == "good":
                    ok = status == 200 and data["predictions"][0]["top"][0]["class"] == expect
                else:
                    ok = status is not None and expect(status, data)
                rows.append({"kind": kind, "status": status, "ok": ok, "seconds": seconds,
                             "error": data.get("error") if status != 200 else None})

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return rows


def summary(rows: list[dict], wall: float, label: str) -> dict:
    good = np.array([r["seconds"] for r in rows if r["kind"] == "good"]) * 1000
    return {"pass": label, "requests": len(rows), "good": len(good), "hostile": len(rows) - len(good),
            "wrong": sum(not r["ok"] for r in rows), "p50_ms": round(float(np.percentile(good, 50)), 1),
            "p99_ms": round(float(np.percentile(good, 99)), 1), "good_per_s": round(len(good) / wall, 1),
            "wall_s": round(wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="A trained run to serve.")
    parser.add_argument("--images", required=True, help="Folder of .jpg photos to send (searched recursively).")
    parser.add_argument("--n-images", type=int, default=100, help="Distinct photos, cycled over.")
    parser.add_argument("--requests", type=int, default=600, help="Good requests per pass.")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--hostile-fraction", type=float, default=0.1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    from graft.inference import Predictor

    paths = sorted(str(p) for p in Path(args.images).rglob("*.jpg"))
    paths = [paths[i] for i in np.random.default_rng(0).permutation(len(paths))[:args.n_images]]
    predictor = Predictor.load(args.run)  # exports model.onnx once if needed
    expected = [predictor.classes[int(i)] for i in predictor.predict_paths(paths).probabilities.argmax(1)]
    good = [("good", {}, Path(p).read_bytes(), c) for p, c in zip(paths, expected)]
    clean = [good[i % len(good)] for i in range(args.requests)]
    kinds = hostile_kinds(good[0][2])
    every = max(2, round(1 / args.hostile_fraction))
    mixed, names = [], list(kinds)
    for i, item in enumerate(clean):  # the same good requests, hostile ones between them
        mixed.append(item)
        if i % every == every - 1:
            name = names[(i // every) % len(names)]
            mixed.append((name, *kinds[name]))

    port = free_port()
    server = start_server(args.run, port, 32, 5.0)
    results, answers = [], {}
    try:
        asyncio.run(load(port, clean[:100], args.concurrency))  # warm
        rss_start = rss_mb(server.pid)
        for label, plan in (("clean", clean), ("hostile", mixed)):
            start = time.perf_counter()
            rows = asyncio.run(load(port, plan, args.concurrency))
            results.append(summary(rows, time.perf_counter() - start, label))
            print(json.dumps(results[-1]))
            for r in rows:
                if r["kind"] != "good":
                    answers.setdefault(r["kind"], []).append(r)
        rss_end = rss_mb(server.pid)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(30)
    for kind, seen in answers.items():
        texts = sorted({f"{r['status']} {r['error']}"[:120] for r in seen})
        print(f"  {kind}: {len(seen)} sent, {sum(r['ok'] for r in seen)} answered as expected; {texts[0]}")
    ratio = results[1]["p99_ms"] / results[0]["p99_ms"]
    verdict = {"p99_ratio": round(ratio, 2), "within_2x": ratio <= 2, "errors": sum(r["wrong"] for r in results),
               "rss_start_mb": round(rss_start, 1), "rss_growth_mb": round(rss_end - rss_start, 1)}
    print(json.dumps(verdict))
    save_rows(results + [verdict], args.json)


if __name__ == "__main__":
    main()
