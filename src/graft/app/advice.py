"""The advisor on the Train page: ``graft advise PROJECT --json`` in a child process, said in words.

The child writes its JSON to ``STATE/advice.json`` and its stderr to ``STATE/app/advice.log``
(``STATE``: :func:`graft.app.projects.state_folder`); the page reads them, so the answer
survives a reload. The advisor is a dry run: it writes no run folder and trains nothing.
"""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

from graft.app.projects import AppError, app_folder, state_folder
from graft.app.training import _alive, _error_line


def start(project: Path) -> None:
    """Ask the advisor about ``project``; AppError (409) while it is still answering."""
    if status(project)["state"] == "running":
        raise AppError("graft is measuring these photos already: the advice comes in about a minute", 409)
    logs = app_folder(project, "app")
    with open(state_folder(project, "advice.json"), "wb") as out, open(logs / "advice.log", "wb") as log:
        child = subprocess.Popen([sys.executable, "-m", "graft", "advise", str(project), "--json", "-q"],
                                 stdout=out, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    (logs / "advice.pid").write_text(str(child.pid))


def status(project: Path) -> dict:
    """``{"state": idle | running | done | failed, "words": [...], "command": str, "message": str}``."""
    try:
        pid = int(state_folder(project, "app", "advice.pid").read_text())
    except (OSError, ValueError):
        return {"state": "idle"}
    if _alive(pid):
        return {"state": "running"}
    try:
        advice = json.loads(state_folder(project, "advice.json").read_text())
    except (OSError, ValueError):
        try:
            log = state_folder(project, "app", "advice.log").read_text(errors="replace")
        except OSError:
            log = ""
        return {"state": "failed", "message": _error_line(log)}
    command = shlex.join(advice["command"]).replace(" -o RUN", f" -o {project.name}-advised")
    return {"state": "done", "words": words(advice), "command": command, "strategy": advice["strategy"]}


# the advisor's plans (graft.recipes.plans) in words
PLANS = {"finetune-top": "a short fine-tune of the network's top layers, which may add a little",
         "finetune-all": "retraining the whole network on your photos: there are enough of them",
         "frozen-last": "the network's features from another backbone or size with a simple classifier",
         "frozen-inner": "a classifier on the more general features of an inner layer of the network"}


def _minutes(seconds: float) -> str:
    return f"about {seconds:.0f} seconds" if seconds < 90 else f"about {seconds / 60:.0f} minutes"


def words(advice: dict) -> list[str]:
    """The advice (``graft advise --json``) in sentences a person who does not code reads."""
    size = "a small project" if advice["size"] == "small" else "a large project: enough photos to retrain the network"
    sure = "sure" if advice["sure"] >= 0.9 else "fairly sure" if advice["sure"] >= 0.7 else "not sure"
    lines = [f"{advice['n_images']} photos to learn from, about {advice['per_class_median']:.0f} per class: {size}.",
             ("They look like the everyday photos the network learned from (ImageNet)" if advice["similarity"] ==
              "similar" else "They look unlike the everyday photos the network learned from (ImageNet), so what it "
              "learned helps less") + f"; graft is {sure} of this."]
    if advice["resolution"] == "low":
        lines.append(f"The photos are small ({advice['median_short_side']:.0f} px): a smaller input is cheaper "
                     "and sees as much.")
    plan = PLANS.get(advice["strategy"], advice["strategy"])
    if advice["strategy"] == "defaults":
        lines.append("graft recommends what Train does: the network's features with a simple classifier.")
    else:
        lines.append(f"graft recommends {plan}, {_minutes(advice['estimated_seconds'])} here. Train does the "
                     "default (the network's features with a simple classifier), often about as good; the "
                     "recommendation runs from a terminal with the command below.")
    return lines
