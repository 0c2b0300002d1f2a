"""Training path 1: frozen backbone features + a classical head -> a model in a run folder.

:func:`fit_frozen` is what ``graft fit`` calls; :func:`evaluate` what ``graft evaluate`` calls.

When every image's features are already cached for the requested backbone, layer and size,
the fit runs without building (or even importing) the network: the head is fitted on cached
vectors and the artifact is written from the cached feature-network tensors. That is what makes
"try another head" take seconds.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from graft._io.artifact import write_artifact
from graft.artifacts.config import artifact_config
from graft.artifacts.novelty import NoveltyData, record_novelty
from graft.artifacts.run_folder import RunDir, open_run, write_html_safely
from graft.curation.copies import warn_near_copies
from graft.data.decisions import apply_exclude
from graft.data.folders import ImageFolder, load_train_val, scan_folder, take_per_class, warn_unscored_classes
from graft.data.heldout import load_test
from graft.data.overlap import check_output_outside, warn_trained_on
from graft.errors import DataError
from graft.features.sources import SourceFeatures, source_features
from graft.heads.classical import fit_head
from graft.recipes._run import FitResult, as_config, check_not_an_input
from graft.recipes.settings import FrozenFitConfig
from graft.reporting.metrics import Scored
from graft.reporting.summary import validation_title

__all__ = ["FitResult", "FrozenFitConfig", "FrozenPlan", "evaluate", "extract", "fit_frozen", "plan_fit"]


@dataclass
class FrozenPlan:
    """A fit decided before its run folder is touched: the typed settings, every folder it
    reads scanned and split once (``train``, ``val``, and ``test`` when given), and what the
    validation images are, as the reports title them (a folder, or held out of the training one)."""

    config: FrozenFitConfig
    folders: dict[str, ImageFolder]
    strict: bool
    val_title: str

    @property
    def classes(self) -> list[str]:
        return self.folders["train"].classes


def fit_frozen(config, out, *, strict: bool = False, progress: bool = True, overwrite: bool = False,
               **settings) -> FitResult:
    """Fit a classical head on frozen backbone features and save the model and its reports into
    ``out`` (``graft fit``).

    Parameters
    ----------
    config : FrozenFitConfig or str
        The settings; or the training folder (one sub-folder of images per class),
        with the Config's fields as keywords (``settings``).
    out : str or pathlib.Path
        The run folder: new, empty, or an earlier ``fit`` run (replaced).
    strict : bool, default False
        Stop at the first unreadable image (DataError) instead of skipping it with a warning.
    progress : bool, default True
        Show progress bars on stderr.
    overwrite : bool, default False
        Write into a folder that holds something else than an earlier run of this command
        (graft's own outputs are removed first; the user's other files stay).
    **settings
        Fields of :class:`~graft.recipes.settings.FrozenFitConfig`, when ``config`` is a folder.

    Returns
    -------
    FitResult
        The run folder and the metrics written to ``RUN/metrics.json`` (``.model`` loads the
        saved model).

    Raises
    ------
    GraftError
        A setting no run can use, or an output folder that is or lies inside an input folder;
        raised before the run folder is touched.
    DataError
        A folder that is missing, empty, has fewer than two classes or no readable image;
        a ``test_dir`` that is the training or validation folder.

    Notes
    -----
    With neither ``val_dir`` nor ``val_fraction``, a stratified 20 % of the training folder is
    held out (as fastai's ``valid_pct``), so every run reports held-out metrics. The head's
    hyper-parameter (C, k) is chosen by cross-validation on the training split. ``test_dir`` is
    scored once, at the end, with the model validation chose (reports in ``RUN/test/``).
    ``final`` refits the head on training + validation images with the hyper-parameter
    cross-validation chose: the saved model is that refit, the validation metrics stay those of
    the model fitted without the validation images. When every image's features are cached for
    the backbone, layer and size, no network is built: "try another head" takes seconds.
    Example: ``fit_frozen("data", "runs/f", head="rbf-svm")``.
    """
    start = time.perf_counter()
    config = as_config(FrozenFitConfig, config, settings)  # the head and its options are checked there
    check_not_an_input(out, config)
    plan = plan_fit(config, strict=strict)
    run = open_run(out, "fit", overwrite=overwrite)
    with run.lock("fit"):
        return _fit(run, plan, start, progress)


def plan_fit(config: FrozenFitConfig, *, strict: bool = False) -> FrozenPlan:
    """The folders ``config`` names, scanned and split once, with audit decisions (``exclude``)
    and ``shots`` applied and the test folder checked against them; raises GraftError (nothing
    is written) for data no fit can use."""
    val_title = validation_title(config.val_dir or config.train_dir, config.train_dir, config.head)
    train, val = load_train_val(config.train_dir, val_dir=config.val_dir, val_fraction=config.val_fraction,
                                seed=config.seed, balanced=config.class_weight == "balanced")
    if config.exclude is not None:  # graft audit's decisions, acted on in memory: no file changes
        train, val = apply_exclude(config.exclude, train, val)
    if config.shots is not None:  # K labelled images per class; the rest of the training folder is not used
        train = take_per_class(train, config.shots, config.seed)
    folders = {"train": train, "val": val}
    if config.test_dir is not None:
        folders["test"] = load_test(config.test_dir, train, val, final=config.final)
    return FrozenPlan(config, folders, strict, val_title)


def _fit(run: RunDir, plan: FrozenPlan, start: float, progress: bool) -> FitResult:
    config, classes, folders = plan.config, plan.classes, plan.folders
    extracted = _features(plan, progress)
    features, template = extracted.splits, extracted.template
    present = np.unique(features["train"].labels)
    if len(present) < 2:
        raise DataError(f"after skipping unreadable images, {folders['train'].root} has readable images of "
                        f"only {len(present)} class(es); a classifier needs at least two")
    warn_near_copies(features)

    def fit(names, params=None):
        X = np.concatenate([features[n].vectors for n in names])
        y = np.concatenate([features[n].labels for n in names])
        return fit_head(config.head, X, y, len(classes), config.seed, class_weight=config.class_weight,
                        params=params)

    chosen = fit(["train"])
    shipped = fit(["train", "val"], chosen.params) if config.final else chosen
    training = {"method": "frozen-features", "head": config.head, "head_params": chosen.params,
                "class_weight": config.class_weight, "cv_accuracy": chosen.cv_accuracy, "seed": config.seed,
                "train_dir": str(config.train_dir), "final_refit": config.final,
                "n_fitted": len(features["train"]) + (len(features["val"]) if config.final else 0)}
    write_artifact(run.model_dir, artifact_config(template["backbone"], template["layer"], template["preprocessing"],
                                                  classes, shipped.config, training),
                   extracted.trunk, shipped.state)
    record_novelty(run.model_dir, NoveltyData(features["train"].vectors, features["train"].labels,
                                              features["val"].vectors, shipped.logits(features["val"].vectors)))
    extra = {
        "n_train": len(features["train"]), "n_val": len(features["val"]),
        "head": config.head, "head_params": chosen.params, "cv_accuracy": chosen.cv_accuracy,
        "features_cached": sum(f.cached for f in features.values()),
        "engine": extracted.engine,
        "skipped": sorted((item for f in features.values() for item in f.skipped), key=lambda i: i["path"]),
        "final_refit": config.final,
    }
    held_out = {}
    if "test" in features:  # scored by the shipped model; metrics.json keeps its summary under "test"
        test = features["test"]
        test_probabilities = shipped.probabilities(test.vectors)
        held_out["test"] = (
            Scored(test.labels, test_probabilities.argmax(1), classes, test_probabilities, test.paths, "test"),
            {"n_test": len(test), "data_dir": str(config.test_dir), "skipped": test.skipped},
            f"{Path(str(config.test_dir)).name} (test)")
    extra["seconds"] = round(time.perf_counter() - start, 3)
    probabilities = chosen.probabilities(features["val"].vectors)
    metrics = run.write_report(Scored(features["val"].labels, probabilities.argmax(1), classes, probabilities,
                                      features["val"].paths), extra,
                               title=plan.val_title, held_out=held_out)
    run.write_split(folders["train"], folders["val"])
    # config.yaml: the Config's fields with the network as resolved (its weights, layer and input size), strict
    # and the classes; not cache (where the features were read from does not change the run)
    saved = {"command": "fit", **config.to_dict(), "strict": plan.strict, "classes": classes}
    del saved["cache"]
    run.write_config({**saved, "backbone": template["backbone"]["name"],
                      "weights": template["backbone"]["weights_source"], "layer": template["layer"],
                      "image_size": template["preprocessing"]["size"]})
    write_html_safely(run.path)
    return FitResult(run.path, metrics)


def _features(plan: FrozenPlan, progress: bool) -> SourceFeatures:
    """Every split's features: from the cache alone when it holds them all, else extracted."""
    from graft.features.extractor import FeatureExtractor

    c = plan.config
    extractor = FeatureExtractor(c.backbone, layer=c.layer, weights=c.weights, image_size=c.image_size,
                                 batch_size=c.batch_size, engine=c.engine, cache=c.cache, progress=progress)
    return source_features(extractor, plan.folders, strict=plan.strict)


def evaluate(run_dir, data_dir, *, strict=False, engine=FrozenFitConfig.engine, batch_size=FrozenFitConfig.batch_size,
             cache=FrozenFitConfig.cache, progress=True) -> tuple[Path, dict]:
    """Score a saved model on a labelled folder; the reports go to ``RUN_DIR/eval/<folder name>/``.

    Predicts through :func:`graft.inference.open_predictor`, as ``graft predict`` does, so the
    probabilities equal predict's on the same engine.

    Parameters
    ----------
    run_dir : str or pathlib.Path
        A run folder (or its ``model/`` folder).
    data_dir : str or pathlib.Path
        A class-folder tree whose class names are among the model's.
    strict : bool, default False
        Stop at the first unreadable image instead of skipping it with a warning.
    engine : {"auto", "onnx", "torch"}, default "auto"
        ONNX Runtime on ``RUN/model.onnx`` (exported when missing or stale), or torch.
    batch_size : int, default 32
        Images per forward pass.
    cache : bool, default True
        The shared flag of the frozen commands; evaluating reads no feature cache.
    progress : bool, default True
        Show a progress bar on stderr.

    Returns
    -------
    tuple of (pathlib.Path, dict)
        The reports folder and the metrics written to its ``metrics.json`` (accuracy, macro F1,
        per class, top-k accuracy, ``n_val``, ``seconds``, ``skipped``).

    Raises
    ------
    GraftError
        ``run_dir`` holds no graft model, or the reports folder would lie inside ``data_dir``.
    DataError
        ``data_dir`` is missing, names classes the model lacks, or holds no readable image.
    """
    from graft.inference import open_predictor, saved_config

    start = time.perf_counter()
    saved = saved_config(run_dir)  # the model is loaded after the checks: loading may export model.onnx
    run = RunDir(run_dir if (Path(run_dir) / "model").exists() else Path(run_dir).parent)
    check_output_outside(run.path / "eval", {"evaluated folder": data_dir}, "the reports folder",
                         "move the run folder out of the data")
    folder = scan_folder(data_dir, classes=saved["classes"])
    warn_unscored_classes(folder, "evaluation")
    final_refit = (saved.get("training") or {}).get("final_refit")
    warn_trained_on(folder.paths, "evaluation", fitted_images(run.path, final_refit),
                    f"images the model was trained on ({run.path / 'split.csv'})")
    predictor = open_predictor(run_dir, engine)
    batch = predictor.predict_paths(folder.paths, strict=strict, batch_size=batch_size, progress=progress)
    batch.warn_skipped()
    label_of = dict(zip(map(str, folder.paths), folder.labels))
    labels = np.array([label_of[p] for p in batch.paths], dtype=np.int64)
    target = Path("eval") / evaluation_folder_name(run.path / "eval", Path(data_dir).resolve())
    scored = Scored(labels, batch.probabilities.argmax(1), predictor.classes, batch.probabilities, batch.paths,
                    "evaluate")
    metrics = run.write_report(scored, {
        "n_val": len(batch.paths), "data_dir": str(Path(data_dir).resolve()),
        "seconds": round(time.perf_counter() - start, 3), "skipped": batch.skipped,
    }, subdir=str(target), title=Path(data_dir).name)
    write_html_safely(run.path, str(target))
    return run.path / target, metrics


def extract(config: FrozenFitConfig, out, *, strict: bool = False, progress: bool = True, ray: int | None = None):
    """Frozen features of ``config.train_dir`` written to ``out`` (.npz): class folders with
    their labels, or unlabelled images (:func:`graft.data.folders.scan_images`). Returns the
    :class:`~graft.features.extractor.Features` (``.summary()`` says which it read) and the path.
    ``ray``: extract on this many Ray actors (:mod:`graft.features.ray_workers`; ONNX Runtime only)."""
    from graft.data.folders import scan_images
    from graft.errors import GraftError
    from graft.features.extractor import FeatureExtractor

    if ray and config.engine == "torch":
        raise GraftError("--ray runs the feature network in ONNX Runtime on each worker: leave out --engine torch")
    folder = scan_images(config.train_dir)
    check_output_outside(out, {"DATA folder": config.train_dir})  # the .npz would be read as an image next time
    extractor = FeatureExtractor(config.backbone, layer=config.layer, weights=config.weights,
                                 image_size=config.image_size, batch_size=config.batch_size, engine=config.engine,
                                 cache=config.cache, progress=progress, processes=f"ray:{ray}" if ray else "auto").fit()
    features = extractor.extract_folder(folder, strict=strict)
    return features, features.save(out)


def fitted_images(run_dir: Path, final_refit: bool) -> list[Path]:
    """The images a run's model was fitted on, from its split.csv: the training rows, and the
    validation rows too after a ``--final`` refit. Empty without a split.csv (a bare model)."""
    import csv

    subsets = ("train", "val") if final_refit else ("train",)
    try:
        with open(Path(run_dir) / "split.csv", newline="", errors="surrogateescape") as handle:  # as written
            return [Path(row["path"]) for row in csv.DictReader(handle) if row.get("subset") in subsets]
    except (OSError, KeyError, csv.Error):  # no split.csv, or not one graft wrote: nothing to compare with
        return []


def evaluation_folder_name(eval_root: Path, data_dir: Path) -> str:
    """``eval/<name>`` for a data folder: its own name unless that already holds the evaluation
    of another folder (two folders called ``val``), then the name plus a short hash of the path."""
    import hashlib
    import json

    name = data_dir.name or "data"
    existing = eval_root / name / "metrics.json"
    try:
        taken = json.loads(existing.read_text()).get("data_dir") not in (None, str(data_dir))
    except (OSError, ValueError, AttributeError):
        taken = False
    if not taken:
        return name
    return f"{name}-{hashlib.sha1(str(data_dir).encode()).hexdigest()[:8]}"
