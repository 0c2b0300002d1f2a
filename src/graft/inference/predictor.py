"""The Predictor: a saved model answering for images, on ONNX Runtime or on torch.

``graft predict``, ``graft evaluate`` and ``graft serve`` all predict through
:class:`Predictor`: the same decoding (:mod:`graft.inference.decoding`), the same batching
(pieces of :data:`PIECE` rows) and the same backend for one ``engine``, so their probabilities
for an image agree bit for bit. Build one with :meth:`Predictor.load` (one engine) or
:func:`open_predictor` (``engine="auto"``: ONNX Runtime, torch when it cannot answer).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from graft._io.artifact import model_folder, read_artifact_config, refuse_projector
from graft.artifacts.novelty import Novelty
from graft.artifacts.version import model_source
from graft.data.preprocess import Preprocessing
from graft.errors import DataError, GraftError, ModelError
from graft.inference.backends import OnnxBackend, TorchBackend
from graft.inference.decoding import decode_row, decoded_rows, mirrored

REQUIRED_OUTPUTS = ["logits", "probabilities", "features"]
PIECE = 8  # rows per backend call (see Predictor._forward)
ENGINES = ("auto", "onnx", "torch")


@dataclass
class Batch:
    """Outputs for N images: ``paths`` (N, those that decoded, in the order given);
    probabilities (N, C); novelty (N,) float and unfamiliar (N,) bool, both None for a model
    without novelty statistics; skipped: [{"path", "reason"}] in the order given."""

    paths: list[str]
    probabilities: np.ndarray
    novelty: np.ndarray | None
    unfamiliar: np.ndarray | None
    skipped: list[dict] = field(default_factory=list)

    def warn_skipped(self) -> None:
        """One warning per skipped file, "skipping PATH: REASON" (as the feature extractor's);
        :class:`~graft.errors.DataError` when no file at all could be read."""
        for item in self.skipped:
            warnings.warn(f"skipping {item['path']}: {item['reason']}", stacklevel=2)
        if self.skipped and not self.paths:
            first = self.skipped[0]
            raise DataError(f"none of the {len(self.skipped)} images could be read; first problem: "
                            f"{first['path']}: {first['reason']}")


def task_slices(head_config: dict, n_classes: int) -> dict:
    """Task name -> its slice of the class columns; ``{None: all}`` for a single-task model."""
    if head_config.get("kind") != "multitask":
        return {None: slice(0, n_classes)}
    start, tasks = 0, {}
    for task in head_config["tasks"]:
        tasks[task["name"]] = slice(start, start + len(task["classes"]))
        start += len(task["classes"])
    return tasks


def top_per_task(classes: list[str], tasks: dict, probabilities: np.ndarray, top_k: int) -> dict:
    """One image's top-k per task: {task or None: [(class, probability), ...]}, best first.

    A multi-task model's classes are named "task/class"; each task's probabilities sum to 1."""
    tops = {}
    for task, part in tasks.items():
        names, scores = classes[part], probabilities[part]
        order = np.argsort(-scores)[:min(top_k, len(names))]
        tops[task] = [(names[j].split("/", 1)[1] if task else names[j], float(scores[j])) for j in order]
    return tops


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enable: bool):
    """A progress bar over ``total`` images, or one that shows nothing (tqdm not even imported)."""
    if not enable:
        return _NoBar()
    from graft._io.progress import progress_bar

    return progress_bar(total=total, desc="predicting", unit="img")


def _check_tta(tta: str | None) -> None:
    if tta not in (None, "none", "flip"):
        raise GraftError(f"unknown test-time augmentation {tta!r}: none or flip")


class Predictor:
    """A saved model answering for images: input rows or image files -> probabilities, novelty,
    unfamiliar.

    ``classes``: the model's class names; ``tasks``: task name -> the slice of its columns
    (``{None: all}`` for a single-task model); ``version``: the first 12 hex digits of
    sha256(weights.safetensors); ``engine``: "onnx" or "torch"; ``input_type``: "float" rows
    (3, S, S) or "uint8" rows (S, S, 3) (an export made with ``--input uint8``).
    """

    def __init__(self, model_dir: Path, backend):
        self.model_dir = Path(model_dir)
        self.backend = backend
        self.engine = backend.name
        self.session = backend.session  # the ONNX Runtime session (None on torch)
        self.exported = backend.exported
        self.config = read_artifact_config(self.model_dir)
        self.classes: list[str] = list(self.config["classes"])
        self.preprocessing = Preprocessing.from_dict(self.config["preprocessing"])
        self.input_type = backend.input_type
        self.source = getattr(backend, "source", None) or model_source(self.model_dir)
        self.version = self.source["weights_sha256"][:12]
        self.tasks = task_slices(self.config["head"], len(self.classes))
        self.novelty = Novelty.load(self.model_dir)

    @classmethod
    def load(cls, run_dir, threads: int | None = None, export: bool = True, engine: str = "onnx") -> "Predictor":
        """The predictor of a run folder or model folder on one ``engine``: "onnx" (a current
        model.onnx, exported once when missing or stale and ``export``; ``threads``: ONNX
        Runtime's intra-op threads) or "torch" (the saved model in eager torch).

        Raises :class:`~graft.errors.ModelError` for a folder without a loadable model, or
        when ONNX Runtime has no current export (``export=False``) or cannot export it."""
        if engine == "torch":
            return cls(*TorchBackend.load(run_dir))
        if engine != "onnx":
            raise GraftError(f"unknown engine {engine!r}: use auto, onnx or torch")
        return cls(*OnnxBackend.load(run_dir, threads, export))

    # -- input ------------------------------------------------------------------------------
    def decode(self, source, max_pixels: int | None = None) -> np.ndarray:
        """One image (a file's path, its bytes, or a binary file object) -> the network's input
        row (see :func:`graft.inference.decoding.decode_row`; ``max_pixels``: the pixel limit).

        Raises :class:`~graft.errors.ImageDecodeError` naming the file and the problem."""
        return decode_row(source, self.preprocessing, self.input_type, max_pixels)

    def mirrored(self, rows: np.ndarray) -> np.ndarray:
        """The horizontal mirror of a batch of input rows (the width axis of either layout)."""
        return mirrored(rows, self.input_type)

    # -- inference --------------------------------------------------------------------------
    def run(self, rows: np.ndarray, tta: str | None = None) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """A batch of input rows (N, ...) -> (probabilities (N, C), novelty (N,), unfamiliar (N,)).

        ``tta="flip"`` averages each image's probabilities with its mirror's; novelty is that of
        the image as given. Novelty and unfamiliar are None for a model without statistics."""
        _check_tta(tta)
        logits, probabilities, features = self._forward(rows, REQUIRED_OUTPUTS)
        if tta == "flip":
            probabilities = (probabilities + self._forward(self.mirrored(rows), ["probabilities"])[0]) / 2
        if self.novelty is None:
            return probabilities, None, None
        novelty, unfamiliar = self.novelty.judge(features, logits)
        return probabilities, novelty, unfamiliar

    def _forward(self, rows: np.ndarray, outputs: list[str]) -> list[np.ndarray]:
        """The backend over ``rows`` in pieces of PIECE rows, the rest in halving pieces (4, 2, 1).

        ONNX Runtime's CPU arena keeps memory for every batch shape it has seen, fragmented: fed
        the varying batch sizes of a server it grew by ~800 MB here; with these five shapes it
        stays flat after the first few batches, and per image a batch of 8 is as fast as one of
        32 on this CPU (bench/bench_serve.py). Torch gets the same pieces, so an image's answer
        depends on its neighbours in the same way on either engine."""
        parts, start, size = [], 0, PIECE
        while start < len(rows):
            while size > 1 and len(rows) - start < size:
                size //= 2
            parts.append(self.backend.run(rows[start:start + size], outputs))
            start += size
        return [np.concatenate([part[i] for part in parts]) for i in range(len(outputs))]

    def outputs(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The model's raw outputs for input rows: logits (N, C), probabilities (N, C), pooled features (N, D)."""
        logits, probabilities, features = self._forward(rows, REQUIRED_OUTPUTS)
        return logits, probabilities, features

    def warm_up(self) -> None:
        """Run every piece shape once, so a server's first requests and memory are those of later ones."""
        size, side = PIECE, self.preprocessing.size
        while size >= 1:
            shape, dtype = ((size, side, side, 3), np.uint8) if self.input_type == "uint8" else \
                ((size, 3, side, side), np.float32)
            self._forward(np.zeros(shape, dtype), REQUIRED_OUTPUTS)
            size //= 2

    def predict_paths(self, paths, tta: str | None = None, batch_size: int = 32, strict: bool = False,
                      progress: bool = False) -> Batch:
        """Predict image files in batches of ``batch_size``, decoding on a few threads.

        At most two batches of decoded images are held at a time, so memory does not grow with
        the number of files: only the (N, C) probabilities and the (N,) novelty do. Unreadable
        files are listed in ``.skipped`` (``strict``: the first one is raised, an
        :class:`~graft.errors.ImageDecodeError`). ``progress``: a bar on stderr when there is
        more than one batch."""
        _check_tta(tta)
        paths = [str(p) for p in paths]
        kept, rows, skipped, parts = [], [], [], []
        bar = _progress(len(paths), progress and len(paths) > batch_size)  # no bar for one batch

        def flush():
            if rows:
                parts.append(self.run(np.stack(rows), tta))
                bar.update(len(rows))
                rows.clear()

        try:
            for path, row, error in decoded_rows(paths, self.decode, max(2 * batch_size, 4)):
                if error is not None:
                    if strict:
                        raise error
                    skipped.append({"path": path, "reason": error.reason})
                    bar.update(1)
                    continue
                kept.append(path)
                rows.append(row)
                if len(rows) == batch_size:
                    flush()
            flush()
        finally:
            bar.close()
        if not parts:
            return Batch([], np.zeros((0, len(self.classes)), np.float32), None, None, skipped)
        probabilities = np.concatenate([p[0] for p in parts])
        has_novelty = parts[0][1] is not None
        return Batch(kept, probabilities, np.concatenate([p[1] for p in parts]) if has_novelty else None,
                     np.concatenate([p[2] for p in parts]) if has_novelty else None, skipped)

    # -- answers ----------------------------------------------------------------------------
    def top(self, probabilities: np.ndarray, top_k: int) -> dict:
        """One image's top-k per task (see :func:`top_per_task`)."""
        return top_per_task(self.classes, self.tasks, probabilities, top_k)

    def describe(self) -> dict:
        """The model's metadata: classes, input recipe, training, validation metrics, novelty."""
        import json

        run_dir = self.model_dir.parent if self.model_dir.name == "model" else None
        metrics = None
        if run_dir is not None and (run_dir / "metrics.json").is_file():
            try:
                saved = json.loads((run_dir / "metrics.json").read_text())
                metrics = {k: saved[k] for k in ("accuracy", "macro_f1", "n_train", "n_val") if k in saved}
            except (OSError, ValueError):
                metrics = None
        return {
            "version": self.version, "classes": self.classes,
            "tasks": {t: self.classes[s] for t, s in self.tasks.items()} if None not in self.tasks else None,
            "backbone": self.config["backbone"], "layer": self.config["layer"],
            "preprocessing": self.config["preprocessing"], "input_recipe": self.config.get("input_recipe"),
            "training": self.config.get("training", {}), "validation": metrics,
            "novelty": self.novelty.describe() if self.novelty else None,
        }


def saved_config(run_dir) -> dict:
    """A run's or model folder's graft.json (classes, head, preprocessing, training), read
    without loading the model. Raises :class:`~graft.errors.ModelError` when it holds no model."""
    model_dir = model_folder(run_dir)
    if model_dir is None:
        raise ModelError(f"{run_dir} is not a graft model: expected graft.json and weights.safetensors "
                         "(or a run folder holding model/)")
    config = read_artifact_config(model_dir)
    refuse_projector(config, model_dir / "graft.json")
    return config


def open_predictor(run_dir, engine: str = "auto", threads: int | None = None) -> Predictor:
    """The predictor every command uses: ``engine`` "onnx" or "torch" as :meth:`Predictor.load`;
    "auto": ONNX Runtime (exporting model.onnx once when it is missing or stale; that step imports
    torch), else torch with a warning saying why, when ONNX Runtime is not installed or cannot
    export this model. A folder that holds no model, or a model that does not load, is its own
    :class:`~graft.errors.ModelError`, whatever the engine."""
    if engine not in ENGINES:
        raise GraftError(f"unknown engine {engine!r}: use auto, onnx or torch")
    if engine != "auto":
        return Predictor.load(run_dir, threads, engine=engine)
    try:
        return Predictor.load(run_dir, threads, engine="onnx")
    except (ImportError, ModelError) as exc:
        if model_folder(run_dir) is None:
            raise
        predictor = Predictor.load(run_dir, engine="torch")  # a model that does not load raises its own error
        warnings.warn(f"ONNX Runtime cannot run this model ({exc}); predicting with torch", stacklevel=2)
        return predictor
