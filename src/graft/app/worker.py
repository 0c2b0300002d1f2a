"""The child process of one Train: ``python -m graft.app.worker PROJECT RUN_DIR [EXCLUDE_CSV]``.

Runs the recipe registry's ``fit`` with its defaults (what ``graft fit PROJECT -o RUN_DIR``
runs), then writes its model.onnx (what Try it runs), and prints as the command does: progress
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
    from graft.inference import current_export

    print("preparing the model for Try it: 1/1", file=sys.stderr)
    current_export(result.run_dir)  # model.onnx now, while torch is loaded: the first Try it answers at once
    print(f"done: validation accuracy {result.metrics['accuracy']:.4f} -> {result.run_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
