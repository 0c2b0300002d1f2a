"""Run every documented `graft` command for real and write its page: docs/commands/<command>.md.

Each page holds the command's summary and options (from `graft COMMAND --help`, so they are current),
one real example and the output it printed when this script ran it. The outputs of the examples the
getting-started page shows are also kept in docs/generated/<step>.txt (it includes them).

Run from the repository root with the venv's tools on PATH, ../shared/datasets beside the clone:

    .venv/bin/python tools/make_command_docs.py            # every page (about 20 minutes on 2 cores)
    .venv/bin/python tools/make_command_docs.py fit predict # only these commands' pages

The examples write into runs/docs/ (git ignores runs/). Later examples use earlier ones' runs (predict
reads fit's), so running one command alone needs its runs from an earlier full pass. A page whose
example exits non-zero is not written (an example that fails is not documented as if it worked); the
script goes on with the others, names the failed ones at the end and exits 1.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
DATA = "../shared/datasets"
HYM, VAL = f"{DATA}/hymenoptera/train", f"{DATA}/hymenoptera/val"
MAX_LINES = 60  # longer outputs are cut in the middle, saying how many lines were left out


@dataclass
class Page:
    """A command's page: ``steps`` are shell lines shown with their output; ``setup`` lines run first,
    unshown (they prepare what the example needs); ``keep`` names steps whose output also goes to
    docs/generated/<name>.txt (for the getting-started page)."""

    command: str
    steps: list[str]
    setup: list[str] = field(default_factory=list)
    note: str = ""
    keep: dict[int, str] = field(default_factory=dict)
    may_fail: set[int] = field(default_factory=set)  # steps whose non-zero exit is the point (an interrupt)


PAGES = [
    Page(
        "demo",
        ["graft demo -o runs/docs/demo"],
        keep={0: "demo"},
        note="The demo needs no data of yours: scikit-learn's bundled 8x8 digits, upscaled.",
    ),
    Page(
        "fit",
        [f"graft fit {DATA}/flowers17 --val-split 0.25 -o runs/docs/flowers17"],
        keep={0: "fit"},
        note="A cold run decodes every image and extracts its features; later runs on the same images read "
        "the feature cache.",
    ),
    Page(
        "predict",
        [
            f"graft predict runs/docs/flowers17 {DATA}/flowers17/sunflower/image_0721.jpg "
            f"{DATA}/hymenoptera/val/bees/10870992_eebeeb3a12.jpg --top-k 3",
            f"graft predict runs/docs/flowers17 {DATA}/flowers17/sunflower --ray 2 --top-k 1",
        ],
        keep={0: "predict"},
        note="A bee is no flower: `unfamiliar` flags an image unlike the training images. With `--ray 2` a folder "
        "is spread over 2 Ray actors (a local cluster here; a running one through `RAY_ADDRESS`): the same rows "
        "as one process.",
    ),
    Page(
        "evaluate",
        [f"graft fit {HYM} --val {VAL} -o runs/docs/hymenoptera", f"graft evaluate runs/docs/hymenoptera {VAL}"],
    ),
    Page(
        "report",
        ["graft report runs/docs/flowers17"],
        keep={0: "report"},
        note="Open runs/docs/flowers17/report.html in a browser: one self-contained page.",
    ),
    Page("export", ["graft export runs/docs/hymenoptera --format onnx -o runs/docs/hymenoptera.onnx"]),
    Page(
        "extract",
        [
            f"graft extract {VAL} -o runs/docs/hymenoptera-val.npz",
            f"graft extract {VAL} --ray 2 --no-cache -o runs/docs/hymenoptera-val-ray.npz",
        ],
        note="`--ray 2`: 2 Ray actors, one ONNX Runtime session each (`--no-cache` here, or the first run's cached "
        "features would answer).",
    ),
    Page("backbones", ["graft backbones"]),
    Page("layers", ["graft layers tf_efficientnet_lite0"]),
    Page(
        "advise",
        [
            f"graft advise {HYM} --val {VAL}",
            f"graft advise runs/docs/usps-10 --unlabelled {DATA}/digits/usps-1800",
        ],
        setup=[
            "rm -rf runs/docs/usps-10 && for d in 0 1 2 3 4 5 6 7 8 9; do mkdir -p runs/docs/usps-10/$d && "
            f"cp $(ls -d {DATA}/digits/usps-1800/$d/* | head -10) runs/docs/usps-10/$d/; done"
        ],
        note="Ants and bees are photos like ImageNet's. The second example is 10 labelled USPS digits a class "
        "(copied from usps-1800) with the 1800 as unlabelled images: unlike ImageNet, so the advice weighs "
        "pretraining on them first (`graft pretrain --unlabelled`, then `graft fit --backbone` on that run); "
        "on data like ImageNet it is not proposed.",
    ),
    Page("auto", [f"graft auto {HYM} --val {VAL} --budget 2 -o runs/docs/auto"]),
    Page(
        "finetune",
        [f"graft finetune {HYM} --val {VAL} --stages head:4,top1:1 -o runs/docs/hym-ft"],
        note="A short plan for the page; the default plan is longer (README, BENCHMARKS).",
    ),
    Page(
        "resume",
        [
            f"timeout -s INT 60 graft finetune {HYM} --val {VAL} --stages head:6,top1:2 -o runs/docs/hym-resume",
            "graft resume runs/docs/hym-resume",
        ],
        setup=["rm -rf runs/docs/hym-resume"],
        note="The fine-tune is interrupted after 60 s (`timeout -s INT` sends what Ctrl-C sends); "
        "`graft resume` continues it from its last finished epoch.",
        may_fail={0},
    ),
    Page("lr-find", [f"graft lr-find {HYM} -o runs/docs/lr"]),
    Page(
        "pretrain",
        [f"graft pretrain {DATA}/digits/mnist-2000 --arch resnet10t --image-size 32 --stages all:2 -o runs/docs/mnist"],
    ),
    Page(
        "adapt",
        [
            f"graft adapt --source {DATA}/digits/mnist-2000 --target {DATA}/digits/usps-1800 "
            f"--target-val {DATA}/digits/usps-test --backbone resnet10t --from-scratch --image-size 32 "
            "--stages all:2 -o runs/docs/adapt"
        ],
    ),
    Page(
        "distill",
        [
            f"graft distill {HYM} --val {VAL} --teacher runs/docs/auto --student tf_efficientnet_lite0 "
            "--stages head:4 -o runs/docs/distill"
        ],
        note="The teacher is the fine-tuned model `graft auto` kept (see its page); the student learns from "
        "its softened outputs and the labels.",
    ),
    Page(
        "multitask",
        [
            f"graft multitask flowers={DATA}/flowers17 insects={HYM} --val insects={VAL} "
            "--stages head:3 -o runs/docs/multitask"
        ],
    ),
    Page("fewshot", [f"graft fewshot {DATA}/flowers17 --shots 1,5 --episodes 100"]),
    Page("audit", [f"graft audit {HYM} --val {VAL} -o runs/docs/audit"]),
    Page(
        "zeroshot",
        ["graft zeroshot --classes ants,bees -o runs/docs/zeroshot", f"graft evaluate runs/docs/zeroshot {VAL}"],
    ),
    Page("cluster", [f"graft cluster {VAL} -k 2 -o runs/docs/cluster"]),
    Page("select", [f"graft select {HYM} -n 8 -o runs/docs/select"]),
    Page(
        "serve",
        [
            "graft serve hym=runs/docs/hymenoptera --port 8765 &",
            "curl -s localhost:8765/health",
            f"curl -s -F file=@{VAL}/bees/10870992_eebeeb3a12.jpg 'localhost:8765/v1/models/hym/predict?top_k=2'",
            "kill %1",
        ],
        keep={2: "serve"},
        note="The server runs until Ctrl-C (here `kill %1`); it needs the `serve` extra.",
    ),
]


class Failed(Exception):
    """An example exited non-zero."""


def run(line: str, env: dict[str, str], may_fail: bool = False) -> str:
    """Run one shell line from the repository root; its output (stdout and stderr, in order)."""
    done = subprocess.run(
        ["bash", "-c", line], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    if done.returncode != 0 and not may_fail:
        raise Failed(f"`{line}` exited {done.returncode}:\n{done.stdout[-3000:]}")
    return done.stdout.rstrip()


def run_serve(page: Page, env: dict[str, str]) -> list[str]:
    """The serve page's steps: the server in the background, two requests, then stop it."""
    server = subprocess.Popen(
        shlex.split(page.steps[0].rstrip(" &")),
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        for _ in range(120):  # until it answers (loading the model takes a few seconds)
            if subprocess.run(["curl", "-sf", "localhost:8765/health"], capture_output=True).returncode == 0:
                break
            time.sleep(1)
        outputs = [run(line, env) for line in page.steps[1:3]]
    finally:
        server.terminate()
        server.wait(timeout=30)
    return ["", *outputs, ""]


def cut(text: str) -> str:
    lines = text.splitlines()
    if len(lines) <= MAX_LINES:
        return text
    head, tail = lines[: MAX_LINES - 10], lines[-8:]
    return "\n".join([*head, f"... ({len(lines) - len(head) - len(tail)} lines left out)", *tail])


def summary(help_text: str) -> str:
    """The command's description from its --help (the paragraph(s) between Usage and Options)."""
    body = help_text.split("Options:")[0].split("\n", 1)[1]
    return re.sub(r"\s+", " ", body).strip()


def write_page(page: Page, outputs: list[str], help_text: str, stamp: str) -> None:
    shown = []
    for line, output in zip(page.steps, outputs):
        shown.append(f"```console\n$ {line}\n{cut(output)}\n```" if output else f"```console\n$ {line}\n```")
    note = f"\n{page.note}\n" if page.note else ""
    text = (
        f"# graft {page.command}\n\n{summary(help_text)}\n\n## Example\n{note}\n"
        + "\n\n".join(shown)
        + f"\n\n<small>Run by `tools/make_command_docs.py` {stamp}.</small>\n\n"
        f"## Options\n\n```text\n{help_text.rstrip()}\n```\n"
    )
    (DOCS / "commands" / f"{page.command}.md").write_text(text, encoding="utf-8")


def main() -> None:
    wanted = set(sys.argv[1:])
    env = {
        **os.environ,
        "GRAFT_NO_PROGRESS": "1",
        "COLUMNS": "100",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    version = run("graft --version", env)
    stamp = f"with {version}, {datetime.now(timezone.utc):%Y-%m-%d} (timings: a shared 2-core machine)"
    (DOCS / "commands").mkdir(parents=True, exist_ok=True)
    (DOCS / "generated").mkdir(parents=True, exist_ok=True)
    failed = []
    for page in PAGES:
        if wanted and page.command not in wanted:
            continue
        print(f"== graft {page.command}", flush=True)
        started = time.perf_counter()
        try:
            for line in page.setup:
                run(line, env)
            outputs = (
                run_serve(page, env)
                if page.command == "serve"
                else [run(line, env, i in page.may_fail) for i, line in enumerate(page.steps)]
            )
        except Failed as error:
            print(error, flush=True)
            failed.append(page.command)
            continue
        print(f"   {time.perf_counter() - started:.0f} s", flush=True)
        for index, name in page.keep.items():
            (DOCS / "generated" / f"{name}.txt").write_text(
                f"$ {page.steps[index]}\n{cut(outputs[index])}\n", encoding="utf-8"
            )
        write_page(page, outputs, run(f"graft {page.command} --help", env), stamp)
    if failed:
        sys.exit(f"not written (their example failed): {', '.join(failed)}")


if __name__ == "__main__":
    main()
