"""The child process of one job: ``python -m graft.app.worker COMMAND PROJECT RUN_DIR [EXCLUDE_CSV]``.

Runs the recipe registry's COMMAND (``fit`` or ``audit``) with its defaults (what ``graft fit
PROJECT -o RUN_DIR`` runs); after ``fit``, ``graft export RUN`` (RUN/model.onnx: what Try it
runs and Ship it offers), and
prints as the commands do: progress
bars and warnings on stderr, a GraftError as one ``error:`` line (exit 2), Ctrl-C / the page's
cancel as ``cancelled`` (exit 130).
"""
from __future__ import annotations

import sys
import warnings


def main(argv: list[str]) -> int:
    warnings.showwarning = lambda message, *args, **kwargs: print(f"warning: {message}", file=sys.stderr)
    for category in (DeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category)
    from graft.errors import GraftError
    from graft.recipes.registry import recipe

    command, project, out, exclude = argv[0], argv[1], argv[2], (argv[3] if len(argv) > 3 else None)
    chosen = recipe(command)
    settings = {"exclude": exclude} if command == "fit" else {}
    try:
        result = chosen.run(chosen.config(train_dir=project, **settings), out, progress=True)
    except GraftError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cancelled", file=sys.stderr)
        return 130
    from graft.artifacts.export import export_model
    from graft.recipes.settings import ExportConfig

    if command != "fit":
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
