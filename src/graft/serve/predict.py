"""``graft predict``'s library side: image files -> probabilities, novelty and unfamiliar through
:mod:`graft.inference` (ONNX Runtime when it can answer, no torch imported; else the torch
model), and the command's output formats."""
from __future__ import annotations

from dataclasses import dataclass

from graft.defaults import BATCH_SIZE, ENGINE
from graft.inference.predictor import Batch


@dataclass
class PredictOptions:
    """How to predict: ``tta`` None or "flip"; ``engine`` auto (ONNX Runtime, torch when it
    cannot answer), onnx (ONNX Runtime or an error) or torch; the rest as ``graft predict``'s
    flags. ``cache``: kept for the shared ``--no-cache`` flag; predicting reads and writes no
    feature cache on either engine (the whole model runs on each image). ``ray``: predict on this
    many Ray actors (:mod:`graft.inference.on_ray`; ONNX Runtime only), None: in this process."""

    tta: str | None = None
    strict: bool = False
    engine: str = ENGINE  # graft fit's --engine and --batch-size, which graft predict shows
    batch_size: int = BATCH_SIZE
    cache: bool = True
    progress: bool = False
    ray: int | None = None


@dataclass
class Predictions:
    """``classes``; ``tasks``: task -> slice of columns ({None: all} for one task); ``batch``:
    the :class:`~graft.inference.Batch`; ``engine``: "onnx" or "torch"."""

    classes: list[str]
    tasks: dict
    batch: Batch
    engine: str

    def lines(self, top_k: int = 3, fmt: str = "table"):
        """``graft predict``'s output, line by line: ``table`` (path, then each task's top-k and a
        flag when unfamiliar), ``json`` (one object per image with novelty and unfamiliar; a
        skipped file is a row with its error) or ``csv`` (path, [task,] rank, class, probability,
        novelty, unfamiliar; written by the csv module, so a path holding a comma, a quote or a
        newline is one quoted field; novelty and unfamiliar are empty for a model without them)."""
        import json

        from graft.inference.predictor import top_per_task

        batch, several = self.batch, len(self.tasks) > 1
        if fmt == "csv":
            yield _csv_row(["path", *(["task"] if several else []), "rank", "class", "probability", "novelty",
                            "unfamiliar"])
        for i, (path, probs) in enumerate(zip(batch.paths, batch.probabilities)):
            tops = top_per_task(self.classes, self.tasks, probs, top_k)
            novelty = None if batch.novelty is None else round(float(batch.novelty[i]), 4)
            unfamiliar = None if batch.unfamiliar is None else bool(batch.unfamiliar[i])
            if fmt == "json":
                listed = {task: [{"class": c, "probability": round(p, 6)} for c, p in top]
                          for task, top in tops.items()}
                row = {"path": path, "top": listed[None]} if None in listed else {"path": path, "tasks": listed}
                yield json.dumps({**row, "novelty": novelty, "unfamiliar": unfamiliar})
            elif fmt == "csv":
                flags = ["" if novelty is None else novelty, "" if unfamiliar is None else int(unfamiliar)]
                for task, top in tops.items():
                    yield from (_csv_row([path, *([task] if task else []), rank, c, f"{p:.6f}", *flags])
                                for rank, (c, p) in enumerate(top, 1))
            else:
                flag = f"\tunfamiliar (novelty {novelty:.1f})" if unfamiliar else ""
                yield f"{path}\t" + "  |  ".join((f"{task}: " if task else "") + "  ".join(
                    f"{c} {p:.3f}" for c, p in top) for task, top in tops.items()) + flag
        if fmt == "json":
            yield from (json.dumps({"path": item["path"], "error": item["reason"]}) for item in batch.skipped)

    def write(self, echo, top_k: int = 3, fmt: str = "table") -> int:
        """Print :meth:`lines` with ``echo`` and name each skipped file on stderr (``echo(...,
        err=True)``: "warning: skipping PATH: REASON", in every format; a lone unreadable input is named once, by the
        error). Returns the exit status,
        as ``cat`` or ``grep`` set theirs: 0 when every input was predicted, 1 when some were
        skipped (the others' answers are printed). Raises :class:`~graft.errors.DataError`
        (exit 2) when none could be read."""
        for line in self.lines(top_k, fmt):
            echo(line)
        alone = len(self.batch.skipped) == 1 and not self.batch.paths  # the error line below names it
        for item in [] if alone else self.batch.skipped:
            echo(f"warning: skipping {item['path']}: {item['reason']}", err=True)
        if self.batch.skipped and not self.batch.paths:
            from graft.errors import DataError

            skipped = self.batch.skipped
            raise DataError(f"{skipped[0]['path']}: {skipped[0]['reason']}" if len(skipped) == 1 else
                            f"none of the {len(skipped)} input files could be read as an image (each named above)")
        return 1 if self.batch.skipped else 0


def _csv_row(fields) -> str:
    """One CSV record without its line end (``echo`` adds it): quoted where a field needs it.

    The writer's line end must hold CR and LF: the csv module quotes a field holding a character
    of it, so an empty line end left a path holding only a newline unquoted (two records)."""
    import csv
    import io

    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(fields)
    return out.getvalue()[:-2]


def predict_files(run_dir, paths, options: PredictOptions | None = None) -> Predictions:
    """Predict image files with the run's model through :func:`graft.inference.open_predictor`
    (the path ``graft evaluate`` and ``graft serve`` take too): ONNX Runtime, exporting
    model.onnx once when it is missing or stale (that step imports torch), or torch
    (``engine="torch"``, or ``"auto"`` with a warning when ONNX Runtime cannot answer)."""
    from graft.inference import open_predictor

    options = options or PredictOptions()
    if options.ray:
        return _predict_on_ray(run_dir, paths, options)
    predictor = open_predictor(run_dir, options.engine)
    batch = predictor.predict_paths(paths, options.tta, options.batch_size, options.strict, options.progress)
    return Predictions(predictor.classes, predictor.tasks, batch, predictor.engine)


def _predict_on_ray(run_dir, paths, options: PredictOptions) -> Predictions:
    """predict_files on ``options.ray`` Ray actors: model.onnx made current here, once, then
    loaded by each actor (the torch engine has no place there)."""
    from graft.errors import GraftError
    from graft.inference import open_predictor
    from graft.inference.on_ray import predict_on_ray

    if options.engine == "torch":
        raise GraftError("--ray runs the model's ONNX export in ONNX Runtime on each worker: leave out --engine torch")
    predictor = open_predictor(run_dir, "onnx", threads=1)
    batch = predict_on_ray(predictor, paths, options.ray, options.tta, options.batch_size, options.strict,
                           options.progress)
    return Predictions(predictor.classes, predictor.tasks, batch, predictor.engine)
