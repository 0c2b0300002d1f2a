"""Bounded load test of `graft serve` on 127.0.0.1 (issue 19): fixed request counts, stops by itself.

    python bench/bench_serve.py --run RUN --images DIR [--requests 2000] [--concurrency 1,8,32]

Starts `graft serve RUN` on a free port, then for each concurrency sends --requests requests
(one image each, the raw body) with an httpx async client and reports errors, p50/p99 latency
and images/s; images/s at the highest concurrency is compared with graft's own batch predict
(Predictor.predict_paths, batches of 32, the path `graft predict` takes) over the same
images in one process. The server's RSS is read from /proc before and after. A second pass
mixes in --bad-fraction bad requests (not an image, truncated JPEG, a decompression bomb, a
30 MB body): each must be answered 4xx, every good one with the right class.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save_rows  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bad_bodies(good: bytes) -> dict[str, bytes]:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    bomb = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 40000, 40000, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return {"not-an-image": b"just some text, not a picture\n" * 10, "truncated-jpeg": good[: len(good) // 3],
            "bomb": bomb, "30MB-body": os.urandom(30 * 2**20)}


async def load(url: str, bodies: list[tuple[str, bytes, str | None]], requests: int, concurrency: int):
    """Send ``requests`` requests (cycling over ``bodies``: (kind, bytes, expected class or None
    for a bad one)) with at most ``concurrency`` in flight. Returns per-request rows."""
    import httpx

    rows, next_index = [], iter(range(requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        async def worker():
            for i in next_index:
                kind, body, expected = bodies[i % len(bodies)]
                start = time.perf_counter()
                try:
                    answer = await client.post(url, content=body, params={"top_k": 1})
                    status, data = answer.status_code, answer.json()
                except (httpx.HTTPError, ValueError) as exc:
                    status, data = None, {"error": f"{type(exc).__name__}: {exc}"}
                seconds = time.perf_counter() - start
                if expected is None:
                    ok = status is not None and 400 <= status < 500 and "error" in data
                else:
                    ok = status == 200 and data["predictions"][0]["top"][0]["class"] == expected
                rows.append({"kind": kind, "status": status, "ok": ok, "seconds": seconds,
                             "error": data.get("error") if status != 200 else None})

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return rows


def summarise(rows, wall: float, concurrency: int, label: str) -> dict:
    good = [r for r in rows if r["kind"] == "good"]
    latencies = np.array([r["seconds"] for r in good]) * 1000
    return {"pass": label, "concurrency": concurrency, "requests": len(rows), "good": len(good),
            "bad": len(rows) - len(good), "wrong": sum(not r["ok"] for r in rows),
            "p50_ms": round(float(np.percentile(latencies, 50)), 1),
            "p99_ms": round(float(np.percentile(latencies, 99)), 1),
            "images_per_s": round(len(good) / wall, 1), "wall_s": round(wall, 1)}


def batch_baseline(run: str, paths: list[str], total: int) -> tuple[float, float]:
    """(images/s, CPU ms per image) of graft's own batch predict over ``total`` images (the
    same list, cycled). CPU time counts every thread of this process (decoding, ORT)."""
    from graft.inference import Predictor

    predictor = Predictor.load(run)
    cycled = [paths[i % len(paths)] for i in range(total)]
    predictor.predict_paths(cycled[:64])  # warm
    start, cpu = time.perf_counter(), time.process_time()
    predictor.predict_paths(cycled, batch_size=32)
    return total / (time.perf_counter() - start), 1000 * (time.process_time() - cpu) / total


def start_server(run: str, port: int, max_batch: int, max_wait_ms: float, *extra: str):
    """`graft serve m=RUN` on 127.0.0.1:port (the model is named m), once /health answers."""
    command = [sys.executable, "-m", "graft", "serve", f"m={run}", "--port", str(port), "--max-batch",
               str(max_batch), "--max-wait-ms", str(max_wait_ms), *extra]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    import httpx

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.3)
    process.kill()
    raise SystemExit("the server did not start: " + (process.stdout.read() or ""))


def bad_pass(base: str, good: list, requests: int, concurrency: int, fraction: float) -> dict:
    """The load with ``fraction`` bad requests mixed in, each kind's answer printed once."""
    bad = bad_bodies(good[0][1])
    every = max(1, round(1 / fraction)) if fraction > 0 else 0
    mixed, kinds = [], list(bad)
    for i, item in enumerate(good * (requests // len(good) + 1)):
        if every and i % every == every - 1:
            kind = kinds[(i // every) % len(kinds)]
            mixed.append((kind, bad[kind], None))
        else:
            mixed.append(item)
    start = time.perf_counter()
    rows = asyncio.run(load(base, mixed[:requests], requests, concurrency))
    result = summarise(rows, time.perf_counter() - start, concurrency, f"{fraction:.0%} bad")
    print(json.dumps(result))
    answers_by_kind = {}
    for r in rows:
        if r["kind"] != "good":
            answers_by_kind.setdefault(r["kind"], set()).add(f"{r['status']} {r['error']}"[:110])
    for kind, seen in answers_by_kind.items():
        print(f"  {kind}: {sorted(seen)[0]}" + (f" (+{len(seen) - 1} other texts)" if len(seen) > 1 else ""))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="A trained run to serve.")
    parser.add_argument("--images", required=True, help="Folder of images to send (searched recursively).")
    parser.add_argument("--n-images", type=int, default=200, help="Distinct images, cycled over.")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--bad-fraction", type=float, default=0.1)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    from graft.inference import Predictor

    paths = sorted(str(p) for p in Path(args.images).rglob("*.jpg"))
    paths = [paths[i] for i in np.random.default_rng(0).permutation(len(paths))[:args.n_images]]
    predictor = Predictor.load(args.run)  # exports model.onnx once if needed
    answers = predictor.predict_paths(paths)
    expected = [predictor.classes[int(i)] for i in answers.probabilities.argmax(1)]
    good = [("good", Path(p).read_bytes(), c) for p, c in zip(paths, expected)]
    levels = [int(c) for c in args.concurrency.split(",")]
    baseline, baseline_cpu = batch_baseline(args.run, paths, args.requests)
    print(f"graft's batch predict, one process: {baseline:.1f} images/s, {baseline_cpu:.1f} CPU ms/image "
          f"over {args.requests} images (before)")

    port = free_port()
    server = start_server(args.run, port, args.max_batch, args.max_wait_ms)
    base = f"http://127.0.0.1:{port}/v1/models/m/predict"
    results = []
    try:
        # warm-up at the highest concurrency: the working set of a full load is reached before
        # RSS is first read, so the growth after it is what a long run would leak
        asyncio.run(load(base, good, 200, levels[-1]))
        rss_start = rss_mb(server.pid)
        for concurrency in levels:
            start, server_cpu, client_cpu = time.perf_counter(), cpu_seconds(server.pid), time.process_time()
            rows = asyncio.run(load(base, good, args.requests, concurrency))
            results.append(summarise(rows, time.perf_counter() - start, concurrency, "good"))
            results[-1]["server_cpu_s"] = round(cpu_seconds(server.pid) - server_cpu, 1)
            results[-1]["client_cpu_s"] = round(time.process_time() - client_cpu, 1)
            print(json.dumps(results[-1]))
        rss_end = rss_mb(server.pid)
        results.append(bad_pass(base, good, args.requests, levels[-1], args.bad_fraction))
        rss_after_bad = rss_mb(server.pid)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(30)
    # measured again after the server: on a shared machine the load drifts; the mean of the two is the reference
    again, again_cpu = batch_baseline(args.run, paths, args.requests)
    baseline, baseline_cpu = (baseline + again) / 2, (baseline_cpu + again_cpu) / 2
    top = results[len(levels) - 1]
    served_cpu = 1000 * top["server_cpu_s"] / top["good"]
    # on a shared machine wall rates drift with the neighbours' load; CPU per image does not
    summary = {"baseline_images_per_s": round(baseline, 1), "served_images_per_s": top["images_per_s"],
               "ratio": round(top["images_per_s"] / baseline, 3), "baseline_cpu_ms_per_image": round(baseline_cpu, 1),
               "served_cpu_ms_per_image": round(served_cpu, 1), "cpu_ratio": round(baseline_cpu / served_cpu, 3),
               "rss_start_mb": round(rss_start, 1),
               "rss_growth_mb": round(rss_end - rss_start, 1),
               "rss_growth_with_bad_mb": round(rss_after_bad - rss_start, 1),
               "errors": sum(r["wrong"] for r in results)}
    print(json.dumps(summary))
    save_rows(results + [summary], args.json)


if __name__ == "__main__":
    main()
