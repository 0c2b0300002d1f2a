"""``graft auto``: the advice, checked before anything is kept.

:func:`auto` measures the data (:func:`graft.recipes.advise.advise`), then scores on the
validation split the plans the advice names in ``checks``: ``graft fit``'s defaults always,
and the quadrant's two most promising other plans (frozen ones share the feature cache the
advice filled; a short fine-tune only when its estimate fits ``--budget``). The best validation
accuracy is kept in the run folder; on a tie the defaults win, so auto is never worse on
validation than ``graft fit`` as is. ``RUN/advice.json`` records the measurements, every score
and the time estimated against the time taken.
"""
from __future__ import annotations

import json
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

from graft._io.files import write_atomic
from graft.errors import DataError
from graft.recipes._run import check_not_an_input
from graft.recipes.advise import Advice, advise, advise_config
from graft.recipes.selftaught_plan import kept_note, pretrain_backbone

FINAL_SECONDS = 5.0  # refitting a frozen winner from cached features, with its reports


@dataclass
class Check:
    """One plan scored on validation."""

    name: str
    accuracy: float
    seconds: float
    estimated_seconds: float
    command: list[str]
    pretrain_command: list[str] | None = None  # self-taught: run before command
    pretrain_seconds: float | None = None  # of seconds


@dataclass
class AutoResult:
    run_dir: Path
    metrics: dict
    advice: Advice
    checks: list[Check] = field(default_factory=list)
    chosen: str = "defaults"
    verdict: str = ""
    estimated_seconds: float = 0.0  # the whole of auto, said after the advice and before the checks
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {**self.advice.to_dict(), "quadrant_words": self.advice.words(),
                "checked": [asdict(c) for c in self.checks], "chosen": self.chosen,
                "fell_back_to_defaults": self.chosen == "defaults", "verdict": self.verdict,
                "final_accuracy": self.metrics.get("accuracy"), "auto_estimated_seconds": self.estimated_seconds,
                "auto_seconds": self.seconds}


def winner(checks: list[Check]) -> str:
    """The best validation accuracy; a tie goes to the defaults, then to the plan checked first."""
    best = max(c.accuracy for c in checks)
    tied = [c.name for c in checks if c.accuracy >= best - 1e-12]
    return "defaults" if "defaults" in tied else tied[0]


def verdict(checks: list[Check], chosen: str) -> str:
    scores = {c.name: c.accuracy for c in checks}
    default = scores.get("defaults")
    if chosen == "defaults":
        others = ", ".join(f"{n} {a:.4f}" for n, a in scores.items() if n != "defaults") or "none"
        return (f"no candidate beat graft fit's defaults ({default:.4f}) on validation ({others}): "
                "auto ran the defaults")
    return f"{chosen} scored {scores[chosen]:.4f} on validation, {100 * (scores[chosen] - default):+.1f} points " \
           f"over graft fit's defaults ({default:.4f}): auto kept it"


def auto(config, out, *, progress: bool = True, overwrite: bool = False, say=print, **settings) -> AutoResult:
    """Advise, score the advice's ``checks`` on validation, keep the best in ``out``.

    ``config``: an :class:`~graft.recipes.settings.AdviseConfig`, or the folder with its fields
    as keywords. ``say`` receives the lines to show (the advice, the estimate, each score).
    Frozen plans are scored in a scratch folder and the winner refitted into ``out`` from the
    cache; a fine-tuning plan trains into ``out`` directly (replaced if a frozen plan wins). A
    self-taught plan whose pretraining finds too few readable --unlabelled images is left out
    with a line saying why; the other checks go on.
    Raises what the advice and the recipes raise (DataError, GraftError), and GraftError before
    anything is measured when ``out`` is, holds or lies inside DATA, ``--val`` or ``--unlabelled``.
    """
    config = advise_config(config, settings)
    # before the advice: -o inside DATA was refused only by the final fit, -o inside --unlabelled never
    check_not_an_input(out, config)
    start = time.perf_counter()
    advice = advise(config, progress=progress, out=str(out))
    estimate = advice.seconds + advice.check_seconds + FINAL_SECONDS
    say(f"{advice.text()}\nauto: about {estimate:.0f} s in all (advice {advice.seconds:.0f} s, done; "
        f"{len(advice.checks)} checks on validation and the final run about {estimate - advice.seconds:.0f} s)")
    split = {"val_dir": config.val_dir, "val_fraction": config.val_fraction, "seed": config.seed}
    checks, results, trained_into_out, backbones = [], {}, False, {}
    # the scratch folder lasts until the final run: a self-taught winner is refitted on its pretrained run
    with tempfile.TemporaryDirectory(prefix="graft-auto-") as scratch:
        for name in sorted(advice.checks, key=lambda n: not advice.plan(n).frozen):  # fine-tuning last
            plan, began = advice.plan(name), time.perf_counter()
            try:
                pretrained = pretrain_backbone(plan, Path(scratch), config.seed, progress) if plan.unlabelled else None
            except DataError as exc:  # --unlabelled files that list but do not decode: the other plans still run
                say(f"  not checked {plan.describe()}: {exc}")
                continue
            if pretrained is not None:
                backbones[name] = str(pretrained.run_dir)
            results[name] = _run_plan(config.data, plan, Path(scratch) / name if plan.frozen else Path(out), split,
                                      progress, overwrite, backbone=backbones.get(name))
            trained_into_out |= not plan.frozen
            checks.append(Check(name, float(results[name].metrics["accuracy"]),
                                round(time.perf_counter() - began, 1), plan.estimated_seconds,
                                plan.command(config.data, config.val_dir, config.val_fraction, out),
                                plan.pretrain_command(out), pretrained.metrics["seconds"] if pretrained else None))
            pretraining = f", pretraining {checks[-1].pretrain_seconds:.0f} s" if pretrained else ""
            say(f"  checked {plan.describe()}: validation accuracy {checks[-1].accuracy:.4f} "
                f"({checks[-1].seconds:.0f} s{pretraining}, estimated {plan.estimated_seconds:.0f} s)")
        chosen = winner(checks)
        plan = advice.plan(chosen)
        result = results[chosen] if not plan.frozen else _run_plan(
            config.data, plan, Path(out), split, progress, overwrite or trained_into_out, quiet=False,
            backbone=backbones.get(chosen))
    said = verdict(checks, chosen) + (kept_note(plan, out) if plan.unlabelled else "")
    outcome = AutoResult(Path(result.run_dir), result.metrics, advice, checks, chosen, said,
                         round(estimate, 1), round(time.perf_counter() - start, 1))
    say(f"{outcome.verdict}\nauto took {outcome.seconds:.0f} s (estimated {estimate:.0f} s after the advice)")
    _record(outcome)
    return outcome


def _run_plan(data, plan, out: Path, split: dict, progress: bool, overwrite: bool, quiet: bool = True,
              backbone: str | None = None):
    """``plan`` on ``data`` into ``out``; ``backbone`` replaces the plan's (the self-taught plan's run)."""
    from graft.recipes.finetune import finetune
    from graft.recipes.frozen import fit_frozen

    run = fit_frozen if plan.frozen else finetune
    settings = {**plan.settings(), **({"backbone": backbone} if backbone else {})}
    with warnings.catch_warnings():
        if quiet:  # the data's warnings are said once, by the run that is kept
            warnings.simplefilter("ignore")
        return run(data, out, progress=progress, overwrite=overwrite, **split, **settings)


def _record(outcome: AutoResult) -> None:
    """RUN/advice.json, the scores at the end of RUN/report.txt, and report.html again with them."""
    from graft.artifacts.run_folder import write_html_safely

    run = outcome.run_dir
    write_atomic(run / "advice.json", json.dumps(outcome.to_dict(), indent=2) + "\n")
    lines = ["", "graft auto: candidates scored on validation (all numbers in advice.json)"]
    lines += [f"  {c.name:13s} {c.accuracy:.4f}  {c.seconds:6.0f} s  {'kept' if c.name == outcome.chosen else ''}"
              for c in outcome.checks]
    lines += [f"  {outcome.verdict}", f"  quadrant {outcome.advice.quadrant}: " + "; ".join(outcome.advice.words())]
    report = run / "report.txt"
    if report.is_file():
        write_atomic(report, report.read_text() + "\n".join(lines) + "\n")
    if (run / "report.html").is_file():  # the page is a view of files already written: a failure only warns
        write_html_safely(run)
