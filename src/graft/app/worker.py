"""The child process of one job: ``python -m graft.app.worker COMMAND PROJECT RUN_DIR [ARGS]``.

Runs the recipe registry's COMMAND with its defaults: ``fit`` (ARGS: an exclude CSV; what
``graft fit PROJECT -o RUN_DIR`` runs), then ``graft export RUN`` (RUN/model.onnx: what Try it
runs and Ship it offers), the same after ``finetune`` and ``resume`` (a stopped fine-tune: what
``graft resume RUN_DIR`` does); ``audit``; ``select`` (ARGS: the pool and n; PROJECT's class folders
are the labelled images); ``cluster`` (ARGS: the pool). Prints as the commands do: progress
bars and warnings on stderr, a GraftError as one ``error:`` line (exit 2), Ctrl-C / the page's
cancel as ``cancelled`` (130).
"""
from __future__ import annotations

import signal
import sys
import warnings
from pathlib import Path


def main(argv: list[str]) -> int:
    # The page's Cancel writes RUN.cancelled, then sends a SIGINT. An app started where SIGINT is ignored
    # (nohup, `graft app &` in a script) hands that to its children, and Python then raises no
    # KeyboardInterrupt: the job would run on to "done". Each job takes Python's own handler back, then
    # looks for a cancel that came while the interpreter was still starting (its SIGINT was lost).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from graft.app.projects import state_folder

    if state_folder(Path(argv[1]), "app", f"{Path(argv[2]).name}.cancelled").exists():
        print("cancelled", file=sys.stderr)
        return 130
    warnings.showwarning = lambda message, *args, **kwargs: print(f"warning: {message}", file=sys.stderr)
    for category in (DeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category)
    from graft.errors import GraftError
    from graft.recipes.registry import recipe

    command, project, out, rest = argv[0], argv[1], argv[2], argv[3:]
    chosen = recipe("finetune" if command == "resume" else command)
    if command == "select":  # rest: the pool and n; the project's class folders are what is labelled
        settings = {"pool": rest[0], "n": int(rest[1]), "labelled": project}
    elif command == "cluster":  # rest: the pool
        settings = {"data": rest[0]}
    elif command == "resume":  # a stopped fine-tune, continued as `graft resume RUN` does
        settings = {}
    else:
        settings = {"train_dir": project, **({"exclude": rest[0]} if command in ("fit", "finetune") and rest else {})}
    try:
        if command == "resume":
            from graft.recipes.resume import resume

            result = resume(out, progress=True)
        else:
            result = chosen.run(chosen.config(**settings), out, progress=True)
    except GraftError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cancelled", file=sys.stderr)
        return 130
    from graft.artifacts.export import export_model
    from graft.recipes.settings import ExportConfig

    if command not in ("fit", "finetune", "resume"):
        print(f"done: {result.metrics.get('summary', '')}", file=sys.stderr)
        return 0
    print("step: exporting the model to ONNX", file=sys.stderr)
    # what `graft export RUN` writes, now that torch is loaded: Try it and Ship it need no torch
    for line in export_model(ExportConfig(run_dir=str(result.run_dir), format="onnx")):
        print(line, file=sys.stderr)
    print(f"done: validation accuracy {result.metrics['accuracy']:.4f} -> {result.run_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
