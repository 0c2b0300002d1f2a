"""The child process of one Train: ``python -m graft.app.worker PROJECT RUN_DIR [EXCLUDE_CSV]``.

Runs the recipe registry's ``fit`` with its defaults (what ``graft fit PROJECT -o RUN_DIR``
runs), then ``graft export RUN`` (RUN/model.onnx: what Try it runs and Ship it offers), and
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

    project, out, exclude = argv[0], argv[1], (argv[2] if len(argv) > 2 else None)
    fit = recipe("fit")
    try:
        result = fit.run(fit.config(train_dir=project, exclude=exclude), out, progress=True)
    except GraftError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cancelled", file=sys.stderr)
        return 130
    from graft.artifacts.export import export_model
    from graft.recipes.settings import ExportConfig

    print("step: exporting the model to ONNX", file=sys.stderr)
    # what `graft export RUN` writes, now that torch is loaded: Try it and Ship it need no torch
    for line in export_model(ExportConfig(run_dir=str(result.run_dir), format="onnx")):
        print(line, file=sys.stderr)
    print(f"done: validation accuracy {result.metrics['accuracy']:.4f} -> {result.run_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
