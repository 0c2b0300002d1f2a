"""Training from the page: each Train is a graft run folder written by the recipe registry's
``fit`` in a child process (:mod:`graft.app.worker`), the same folder ``graft fit`` writes.

``STATE/runs/<name>/`` is the run folder (STATE: :func:`graft.app.projects.state_folder`, beside
the project); ``STATE/app/<name>.log`` holds the
child's stderr (its progress bars and its one-line error), ``<name>.pid`` its process id and
``<name>.cancelled`` a cancel. The state shown on the page is read from these files (the
run folder's lock, metrics.json), so it survives a page reload and a restart of the app.
A second Train while one runs is refused with the run folder lock's own message.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

from graft.app.projects import AppError, app_folder, state_folder
from graft.artifacts.run_folder import LOCK_FILE, RunLock
from graft.errors import GraftError

# a tqdm line: "DESC:  45%|####      | 9/20 [00:03<00:04, 2.50img/s]"
_BAR = re.compile(r"(?P<desc>[^\r\n|]*?):\s+(?P<pct>\d+)%\|[^|]*\|\s*(?P<n>\d+)/(?P<total>\d+)\s*"
                  r"\[(?P<elapsed>[\d:]+)<(?P<left>[\d:?]+)")


@dataclass
class Status:
    """What the Train page shows: ``state`` idle | running | done | failed | cancelled; the run's
    name; the current step's progress (``step``, ``done``/``total``, ``left`` as tqdm says it);
    ``accuracy`` (validation, when done); ``message``: the run's one-line error, if any."""

    state: str = "idle"
    run: str | None = None
    step: str = ""
    done: int = 0
    total: int = 0
    left: str = ""
    accuracy: float | None = None
    seconds: float | None = None
    message: str = ""
    resumable: bool = False  # a fine-tune stopped after a finished epoch: Resume continues it

    def as_dict(self) -> dict:
        return asdict(self)


_starting: dict[Path, subprocess.Popen] = {}  # started by this app: held until the child ends
_guard = threading.Lock()


# a job's name prefix -> the recipe it runs
KINDS = {"run": "fit", "audit": "audit", "select": "select", "cluster": "cluster"}


def runs(project: Path, kind: str | None = "run") -> list[str]:
    """The project's jobs of ``kind`` ("run": Train, "audit": Check the photos; None: both),
    oldest first within a kind (names sort by start time)."""
    folder = state_folder(project, "app")
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob(f"{kind or '*'}-*.log") if p.stem.split("-")[0] in KINDS)


def run_dir(project: Path, name: str) -> Path:
    return state_folder(project, "runs", name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    try:  # a finished child of this process stays a zombie until waited for
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True  # not our child (the app restarted): alive as far as kill(0) says


def _pid(project: Path, name: str) -> int | None:
    try:
        return int((state_folder(project, "app") / f"{name}.pid").read_text())
    except (OSError, ValueError):
        return None


def _lock_holder(folder: Path) -> str | None:
    """The run lock's message when another process holds ``folder``'s lock, else None."""
    if not (folder / LOCK_FILE).exists():
        return None
    try:
        with warnings.catch_warnings():  # a lock left by a killed run is free: the probe need not say so
            warnings.simplefilter("ignore")
            RunLock(folder, "fit").acquire().release()
    except GraftError as exc:
        return str(exc)
    return None


def training_now(project: Path) -> str | None:
    """Why ``project`` cannot start another Train (a run of it is training), or None."""
    for name in runs(project, None):
        pid = _pid(project, name)
        held = _lock_holder(run_dir(project, name))
        doing = {"run": "training", "audit": "checking its photos"}.get(name.split("-")[0], "choosing photos")
        if held:
            return f"This project is {doing} already ({name}): {held}"
        if pid is not None and _alive(pid):
            return f"This project is {doing} already ({name}, process {pid}): wait for it to finish, or cancel it"
    return None


def start(project: Path, exclude: Path | None = None, kind: str = "run", extra: tuple[str, ...] = (),
          recipe: str | None = None) -> str:
    """Start a job of ``kind`` on ``project`` in a child process: "run" a frozen fit, "audit"
    graft audit, "select" graft select (``extra``: its pool and n), "cluster" graft cluster
    (``extra``: the pool), each with the recipe's defaults (``recipe`` "finetune": a Train that
    fine-tunes); its name. AppError (409) when the project is busy."""
    with _guard:
        busy = training_now(project)
        if busy:
            raise AppError(busy, 409)
        name = time.strftime(f"{kind}-%Y%m%d-%H%M%S")
        while (state_folder(project, "app") / f"{name}.log").exists():  # two clicks in one second
            name += "b"
        app_folder(project, "app")
        app_folder(project, "runs")
        command = [sys.executable, "-m", "graft.app.worker", recipe or KINDS[kind], str(project),
                   str(run_dir(project, name))]
        if exclude is not None and exclude.exists():
            command.append(str(exclude))
        command += extra
        _spawn(project, name, command, "wb")
        return name


def _spawn(project: Path, name: str, command: list[str], mode: str) -> None:
    logs = app_folder(project, "app")
    with open(logs / f"{name}.log", mode) as log:
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    (logs / f"{name}.pid").write_text(str(child.pid))
    _starting[project] = child


def resume(project: Path) -> str:
    """Continue the project's newest Train from its last finished epoch (a fine-tune that was
    cancelled, or whose process died: ``graft resume RUN`` through the registry); its name."""
    with _guard:
        busy = training_now(project)
        if busy:
            raise AppError(busy, 409)
        now = status(project)
        if not now.resumable:
            raise AppError("There is no stopped fine-tune to resume in this project: train again", 409)
        state_folder(project, "app", f"{now.run}.cancelled").unlink(missing_ok=True)
        _spawn(project, now.run, [sys.executable, "-m", "graft.app.worker", "resume", str(project),
                                  str(run_dir(project, now.run))], "ab")
        return now.run


def cancel(project: Path, kind: str = "run") -> str:
    """Stop the project's running job of ``kind`` (SIGINT to its process group: the recipe lets
    go of the run folder's lock as on Ctrl-C); its name. AppError when none is running."""
    for name in reversed(runs(project, kind)):
        pid = _pid(project, name)
        if pid is not None and _alive(pid):
            (state_folder(project, "app") / f"{name}.cancelled").write_text(time.strftime("%Y-%m-%dT%H:%M:%S\n"))
            try:
                os.killpg(pid, signal.SIGINT)
            except OSError:
                pass
            return name
    raise AppError("Nothing is training in this project", 409)


_STEP = re.compile(r"^step: (?P<desc>.+)$", re.M)  # the worker's own steps (no bar)
# tqdm's names of the fit's steps, in the page's words
_WORDS = {"features train": "reading the training photos", "features val": "reading the photos kept aside",
          "features test": "reading the test photos"}
_EPOCH = re.compile(r"^(?P<stage>\S+) epoch (?P<epoch>\d+)$")  # the Trainer's bar: "top2 epoch 3"


def _last_bar(log: str) -> dict | None:
    """The latest progress bar or step the log shows: {"desc", and "n", "total", "left" for a bar}."""
    tail = log[-4000:].replace("\r", "\n")
    found = [(m.start(), m.groupdict()) for pattern in (_BAR, _STEP) for m in pattern.finditer(tail)]
    if not found:
        return None
    bar = max(found, key=lambda item: item[0])[1]
    desc = bar["desc"].strip()
    epoch = _EPOCH.match(desc)
    if epoch:
        desc = ("training the new head" if epoch["stage"] == "head" else f"fine-tuning ({epoch['stage']})") + \
            f", epoch {epoch['epoch']}"
    bar["desc"] = _WORDS.get(desc, desc)
    return bar


def _error_line(log: str) -> str:
    lines = [line.strip() for line in log.replace("\r", "\n").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    if errors:
        return errors[-1][len("error:"):].strip()
    return lines[-1] if lines else "the training process ended without a message"


def status(project: Path, name: str | None = None, kind: str = "run") -> Status:
    """The state of job ``name`` (default: the newest of ``kind``) read from its files."""
    names = runs(project, kind)
    if name is None:
        if not names:
            return Status()
        name = names[-1]
    logs, folder = state_folder(project, "app"), run_dir(project, name)
    try:
        log = (logs / f"{name}.log").read_text(errors="replace")
    except OSError:
        log = ""
    pid = _pid(project, name)
    if pid is not None and _alive(pid):
        bar = _last_bar(log) or {}
        step = (bar.get("desc") or "starting (loading the network)").strip()
        return Status("running", name, step, int(bar.get("n") or 0), int(bar.get("total") or 0), bar.get("left") or "")
    _starting.pop(project, None)
    if (folder / "metrics.json").exists() and ((folder / "model").is_dir() or kind != "run"):
        metrics = json.loads((folder / "metrics.json").read_text())
        return Status("done", name, accuracy=metrics.get("accuracy"), seconds=metrics.get("seconds"))
    resumable = kind == "run" and (folder / "checkpoints" / "last.pt").exists()
    if (logs / f"{name}.cancelled").exists():
        return Status("cancelled", name, message="Cancelled: Resume continues from the last finished epoch"
                      if resumable else "Cancelled: nothing was kept from this run", resumable=resumable)
    return Status("failed", name, message=_error_line(log), resumable=resumable)


def latest_model(project: Path) -> Path | None:
    """The newest run folder of the project holding a finished model, or None."""
    for name in reversed(runs(project)):
        folder = run_dir(project, name)
        if (folder / "metrics.json").exists() and (folder / "model" / "graft.json").exists():
            return folder
    return None
