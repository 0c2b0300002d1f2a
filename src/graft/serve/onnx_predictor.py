"""Predictions from a run's ``model.onnx`` with ONNX Runtime + PIL + numpy alone (no torch, no timm).

``graft predict`` and ``graft serve`` both use :class:`OnnxPredictor`. Images are decoded and
preprocessed by graft's own rules (:func:`graft.data.decode.load_image`,
:class:`graft.data.preprocess.Preprocessing`), so the numbers are those of
:meth:`graft.artifacts.model.GraftModel.predict_paths` (to float32 rounding, < 1e-4).

The export is current when its ``graft.source`` metadata matches the digests of the model
folder's ``weights.safetensors`` and ``graft.json`` and it has the ``features`` output; when it
is missing or stale, :func:`current_export` exports once (that step imports torch) into the run
(``RUN/model.onnx``), or into graft's cache when the run cannot be written.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from graft._io.artifact import model_folder, read_artifact_config
from graft.artifacts.novelty import Novelty
from graft.artifacts.version import model_source
from graft.data.decode import load_image
from graft.data.preprocess import Preprocessing
from graft.errors import GraftError, ImageDecodeError, ModelError

REQUIRED_OUTPUTS = ("logits", "probabilities", "features")
PIECE = 8  # rows per ONNX Runtime call (see OnnxPredictor._forward)


@dataclass
class Batch:
    """Outputs for N images: probabilities (N, C); novelty (N,) float and unfamiliar (N,) bool,
    both None for a model without novelty statistics; skipped: [{"path", "reason"}]."""

    paths: list[str]
    probabilities: np.ndarray
    novelty: np.ndarray | None
    unfamiliar: np.ndarray | None
    skipped: list[dict] = field(default_factory=list)


def default_onnx_path(model_dir: Path) -> Path:
    """RUN/model.onnx for RUN/model; <folder>.onnx beside a bare model folder (as ``graft export``)."""
    if model_dir.name == "model" and (model_dir.parent / "model").is_dir():
        return model_dir.parent / "model.onnx"
    return model_dir.parent / f"{model_dir.name}.onnx"


def _cache_onnx_path(source: dict) -> Path:
    from graft.features.cache import cache_root

    return cache_root() / "serve" / f"{source['weights_sha256'][:16]}-{source['config_sha256'][:16]}.onnx"


def _options(threads: int | None, optimise: bool):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or (os.cpu_count() or 1)
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as graft._io.onnx.ort_session
    options.log_severity_level = 3
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimise
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    return options


def optimised_session(path: Path, threads: int | None = None):
    """An ONNX Runtime session of ``path``, its graph optimised once per file, ORT version and CPU.

    ORT's full optimisation (fusions, the NCHWc layout for this CPU's vector width) takes ~80 ms
    of a ~0.4 s ``graft predict``; the optimised graph is kept in graft's cache
    (``onnx-optimised/``, named by the file's path, size, mtime, the ORT version and the CPU
    flags: it is only valid on such a CPU) and loaded as it is next time."""
    import onnxruntime as ort

    path = Path(path).resolve()
    info = path.stat()
    flags = _cpu_flags()
    folder = Path(os.environ.get("GRAFT_CACHE_DIR") or Path.home() / ".cache" / "graft").expanduser() / "onnx-optimised"
    stem = hashlib.sha256(str(path).encode()).hexdigest()[:16]
    key = hashlib.sha256(f"{info.st_size}:{info.st_mtime_ns}:{ort.__version__}:{flags}".encode()).hexdigest()[:16]
    kept = folder / f"{stem}-{key}.onnx"
    providers = ["CPUExecutionProvider"]
    if kept.is_file():
        try:
            return ort.InferenceSession(str(kept), _options(threads, False), providers=providers)
        except Exception:  # damaged or foreign: optimised again below
            kept.unlink(missing_ok=True)
    options = _options(threads, True)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob(f"{stem}-*.onnx"):  # an earlier version of this file
            old.unlink(missing_ok=True)
        tmp = folder / f".{kept.name}.{os.getpid()}.tmp"
        options.optimized_model_filepath = str(tmp)
        session = ort.InferenceSession(str(path), options, providers=providers)
        os.replace(tmp, kept)
        return session
    except OSError:  # a read-only cache: optimise every time
        return ort.InferenceSession(str(path), _options(threads, True), providers=providers)


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith(("flags", "Features")):
                    return hashlib.sha256(line.encode()).hexdigest()[:16]
    except OSError:
        pass
    import platform

    return platform.machine() + platform.processor()


def _current_session(path: Path, source: dict, threads: int | None):
    """An ONNX Runtime session of ``path`` when it is a current export of ``source``, else None."""
    if not path.is_file():
        return None
    try:
        session = optimised_session(path, threads)
    except Exception:  # not ONNX, or damaged: treated as missing and exported again
        return None
    meta = session.get_modelmeta().custom_metadata_map
    outputs = {o.name for o in session.get_outputs()}
    try:
        current = json.loads(meta.get("graft.source", "null")) == source
    except json.JSONDecodeError:
        current = False
    return session if current and outputs.issuperset(REQUIRED_OUTPUTS) else None


def current_export(run_dir, threads: int | None = None, export: bool = True):
    """``(model_dir, session, exported)``: a session of a current export of the run's model.

    Raises :class:`~graft.errors.ModelError` when ``run_dir`` holds no model, or when there is no
    current export and ``export`` is False.
    """
    model_dir = model_folder(run_dir)
    if model_dir is None:
        raise ModelError(f"{run_dir} is not a graft model: expected graft.json and weights.safetensors "
                         "(or a run folder holding model/)")
    source = model_source(model_dir)
    session = _current_session(default_onnx_path(model_dir), source, threads)
    if session is not None:  # the usual case, checked first: the cache path costs an import
        return model_dir, session, False
    candidates = [default_onnx_path(model_dir), _cache_onnx_path(source)]
    session = _current_session(candidates[1], source, threads)
    if session is not None:
        return model_dir, session, False
    if not export:
        raise ModelError(f"{model_dir}: no current model.onnx (run `graft export {run_dir}`)")
    from graft.artifacts.export import export_and_verify  # imports torch: once per model change

    for path in candidates:
        try:
            export_and_verify(model_dir, path)
        except (OSError, GraftError) as exc:  # a read-only run, or a foreign file in the way
            if path == candidates[-1]:
                raise ModelError(f"cannot export {model_dir} to ONNX: {exc}") from None
            continue
        session = _current_session(path, source, threads)
        if session is not None:
            return model_dir, session, True
    raise ModelError(f"{model_dir}: the ONNX export does not match the model folder")


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


class OnnxPredictor:
    """A model answering on ONNX Runtime: images -> probabilities, novelty, unfamiliar.

    Build with :meth:`load`. ``classes``: the model's class names; ``tasks``: task name -> the
    slice of its columns (``{None: all}`` for a single-task model); ``version``: the first 12
    hex digits of sha256(weights.safetensors).
    """

    def __init__(self, model_dir: Path, session, exported: bool = False):
        self.model_dir = Path(model_dir)
        self.session = session
        self.exported = exported
        self.config = read_artifact_config(self.model_dir)
        self.classes: list[str] = list(self.config["classes"])
        self.preprocessing = Preprocessing.from_dict(self.config["preprocessing"])
        meta = session.get_modelmeta().custom_metadata_map
        self.input_type = json.loads(meta["graft.input"])["type"]
        self.source = json.loads(meta["graft.source"])
        self.version = self.source["weights_sha256"][:12]
        self.tasks = task_slices(self.config["head"], len(self.classes))
        self.novelty = Novelty.load(self.model_dir)

    @classmethod
    def load(cls, run_dir, threads: int | None = None, export: bool = True) -> "OnnxPredictor":
        """The predictor of a run folder or model folder, exporting model.onnx once when needed."""
        return cls(*current_export(run_dir, threads, export))

    # -- input ------------------------------------------------------------------------------
    def decode(self, path, max_pixels: int | None = None) -> np.ndarray:
        """One image (a file's path, its bytes, or a binary file object) -> the network's input
        row: float32 (3, S, S) or uint8 (S, S, 3). ``max_pixels``: :func:`load_image`'s limit.

        Raises :class:`~graft.errors.ImageDecodeError` naming the file and the problem."""
        image = load_image(path, min_side=self.preprocessing.resize_size, max_pixels=max_pixels)
        if self.input_type == "uint8":
            return np.asarray(self.preprocessing.resize_and_crop(image), dtype=np.uint8)
        return self.preprocessing.to_array(image)

    def mirrored(self, rows: np.ndarray) -> np.ndarray:
        """The horizontal mirror of a batch of input rows (the width axis of either layout)."""
        return np.ascontiguousarray(rows[:, :, ::-1, :] if self.input_type == "uint8" else rows[:, :, :, ::-1])

    # -- inference --------------------------------------------------------------------------
    def run(self, rows: np.ndarray, tta: str | None = None) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """A batch of input rows (N, ...) -> (probabilities (N, C), novelty (N,), unfamiliar (N,)).

        ``tta="flip"`` averages each image's probabilities with its mirror's (as
        ``GraftModel.predict_paths``); novelty is that of the image as given."""
        if tta not in (None, "none", "flip"):
            raise GraftError(f"unknown test-time augmentation {tta!r}: none or flip")
        logits, probabilities, features = self._forward(rows, list(REQUIRED_OUTPUTS))
        if tta == "flip":
            probabilities = (probabilities + self._forward(self.mirrored(rows), ["probabilities"])[0]) / 2
        if self.novelty is None:
            return probabilities, None, None
        novelty, unfamiliar = self.novelty.judge(features, logits)
        return probabilities, novelty, unfamiliar

    def _forward(self, rows: np.ndarray, outputs: list[str]) -> list[np.ndarray]:
        """The session over ``rows`` in pieces of PIECE rows, the rest in halving pieces (4, 2, 1).

        ONNX Runtime's CPU arena keeps memory for every batch shape it has seen, fragmented: fed
        the varying batch sizes of a server it grew by ~800 MB here; with these five shapes it
        stays flat after the first few batches, and per image a batch of 8 is as fast as one of
        32 on this CPU (bench/bench_serve.py)."""
        parts, start, size = [], 0, PIECE
        while start < len(rows):
            while size > 1 and len(rows) - start < size:
                size //= 2
            parts.append(self.session.run(outputs, {"images": rows[start:start + size]}))
            start += size
        return [np.concatenate([part[i] for part in parts]) for i in range(len(outputs))]

    def outputs(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The model's raw outputs for input rows: logits (N, C), probabilities (N, C), pooled features (N, D)."""
        logits, probabilities, features = self._forward(rows, list(REQUIRED_OUTPUTS))
        return logits, probabilities, features

    def warm_up(self) -> None:
        """Run every piece shape once, so a server's first requests and memory are those of later ones."""
        size, side = PIECE, self.preprocessing.size
        while size >= 1:
            if self.input_type == "uint8":
                zeros = np.zeros((size, side, side, 3), np.uint8)
            else:
                zeros = np.zeros((size, 3, side, side), np.float32)
            self._forward(zeros, list(REQUIRED_OUTPUTS))
            size //= 2

    def predict_paths(self, paths, tta: str | None = None, batch_size: int = 32, strict: bool = False) -> Batch:
        """Predict image files in batches of ``batch_size``, decoding on a few threads.

        At most two batches of decoded images are held at a time (as the feature extractor's
        window), so memory does not grow with the number of files: only the (N, C)
        probabilities and the (N,) novelty do. Unreadable files are listed in ``.skipped``
        (``strict``: raise the first one)."""
        import collections

        paths = [str(p) for p in paths]
        kept, rows, skipped, parts = [], [], [], []

        def flush():
            if rows:
                parts.append(self.run(np.stack(rows), tta))
                rows.clear()

        workers = min(4, os.cpu_count() or 1, max(1, len(paths)))
        window = max(2 * batch_size, 4)  # decoded images in flight: bounds memory
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            pending = collections.deque()
            for k, path in enumerate(paths):
                pending.append((path, pool.submit(self.decode, path)))
                while pending and (len(pending) >= window or k == len(paths) - 1):  # in order, as submitted
                    self._take(pending.popleft(), kept, rows, skipped, strict)
                    if len(rows) == batch_size:
                        flush()
            flush()
        if not parts:
            return Batch([], np.zeros((0, len(self.classes)), np.float32), None, None, skipped)
        probabilities = np.concatenate([p[0] for p in parts])
        has_novelty = parts[0][1] is not None
        return Batch(kept, probabilities, np.concatenate([p[1] for p in parts]) if has_novelty else None,
                     np.concatenate([p[2] for p in parts]) if has_novelty else None, skipped)

    @staticmethod
    def _take(item, kept: list, rows: list, skipped: list, strict: bool) -> None:
        """One decode's outcome: a row to predict, or a skipped file (``strict``: raised)."""
        path, future = item
        try:
            rows.append(future.result())
            kept.append(path)
        except ImageDecodeError as exc:
            if strict:
                raise
            skipped.append({"path": path, "reason": exc.reason})

    # -- answers ----------------------------------------------------------------------------
    def top(self, probabilities: np.ndarray, top_k: int) -> dict:
        """One image's top-k per task (see :func:`top_per_task`)."""
        return top_per_task(self.classes, self.tasks, probabilities, top_k)

    def describe(self) -> dict:
        """The model's metadata: classes, input recipe, training, validation metrics, novelty."""
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
