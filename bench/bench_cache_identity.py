"""How much does noticing changed files cost? The feature cache keys each image by its file
identity; this measures, over a dataset, the plain baseline (path + size + mtime from one
stat), graft's identity (the same stat plus ctime and inode), and a full content hash
(blake2b of every byte), and prints each against the baseline.

    python bench/bench_cache_identity.py ../shared/datasets/flowers17
"""
from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path


def size_mtime(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def content_hash(path: Path) -> str:
    digest = hashlib.blake2b()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return f"{path.resolve()}|{digest.hexdigest()}"


def main() -> None:
    from bench_engines import best_pass  # bench/ is on the path when run as a script
    from graft.features.cache import file_identity

    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    paths = sorted(p for p in Path(args.data).rglob("*") if p.is_file())
    megabytes = sum(os.path.getsize(p) for p in paths) / 1e6
    print(f"{len(paths)} files, {megabytes:.1f} MB (page cache warm: best of {args.repeats})")
    base = best_pass(size_mtime, paths, args.repeats)
    for name, fn in (("size+mtime (baseline)", size_mtime), ("graft: + ctime + inode", file_identity),
                     ("blake2b of contents", content_hash)):
        seconds = best_pass(fn, paths, args.repeats)
        print(f"{name:26s} {seconds * 1e3:8.1f} ms  {seconds / len(paths) * 1e6:7.1f} us/file  "
              f"ratio {seconds / base:6.2f}")


if __name__ == "__main__":
    main()
