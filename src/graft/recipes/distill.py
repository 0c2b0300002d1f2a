"""``graft distill``: a student backbone trained from a graft run's outputs and the labels
(Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network", 2015), on the shared
training path with :class:`~graft.methods.distillation.Distillation` as its method."""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from graft._io.progress import progress_bar
from graft.data.datasets import ImageDataset, readable_images
from graft.data.folders import ImageFolder, scan_unlabelled
from graft.data.overlap import overlaps
from graft.errors import DataError, GraftError, ImageDecodeError
from graft.methods.distillation import Distillation, TeacherOnStudentInputs
from graft.recipes._run import FitResult, as_config
from graft.recipes._run_plan import NetworkRecipe, RunData, TrainingPlan
from graft.recipes._training import continue_training, start_training
from graft.recipes.settings import DistillConfig

__all__ = ["DistillConfig", "WithIndex", "continue_run", "distill", "known_images", "teacher_outputs", "transfer_set"]


class WithIndex(Dataset):
    """(image, label) -> (image, tensor([label, index])): the index finds the teacher's outputs."""

    def __init__(self, dataset):
        self.dataset = dataset
        self.records = getattr(dataset, "records", None)
        self.augment = getattr(dataset, "augment", None)

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        image, label = self.dataset[index]
        return image, torch.tensor([label, index])


def distill(config, out, *, strict: bool = False, progress: bool = True, overwrite: bool = False,
            **settings) -> FitResult:
    """Knowledge distillation: train the student ``config.backbone`` on ``config.train_dir`` from a
    teacher run's outputs and the labels.

    Parameters
    ----------
    config : DistillConfig or str
        The settings; or the labelled training folder,
        with the Config's fields as keywords (``settings``).
    out : str or pathlib.Path
        The run folder: new, empty, or an earlier run of this command (replaced).
    strict : bool, default False
        Stop at the first unreadable image (DataError) instead of skipping it with a warning.
    progress : bool, default True
        Show progress bars on stderr.
    overwrite : bool, default False
        Write into a folder that holds something else than an earlier run of this command
        (graft's own outputs are removed first; the user's other files stay).
    **settings
        Fields of :class:`~graft.recipes.settings.DistillConfig`, when ``config`` is a folder.

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
        An empty or unreadable folder, or a transfer set (``unlabelled_dir``) without a readable
        image.

    Notes
    -----
    The loss is ``alpha`` x the KL divergence to the teacher's softened outputs (temperature
    ``config.temperature``) + ``(1 - alpha)`` x cross-entropy on the labels. ``alpha=0`` is the
    same student trained without the teacher; ``alpha=None`` (the default) is 0.9 with a
    transfer set and 0.5 without. Stages that train backbone layers see augmented images and the
    teacher runs on each of those batches; head stages use its outputs on the plain images,
    computed once. ``config.unlabelled_dir`` is a transfer set of unlabelled images the student
    learns from the teacher's soft targets alone. A teacher whose classes differ from the data's
    is a GraftError.

    References
    ----------
    Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural Network", NIPS 2014
    Deep Learning Workshop (arXiv:1503.02531).
    """
    config = as_config(DistillConfig, config, settings)
    if config.alpha is None:
        config = config.replace(alpha=_default_alpha(config))
    return start_training(config, out, RECIPE, strict=strict, progress=progress, overwrite=overwrite)


# The default weight of the soft term. With a transfer set most images carry no label and the soft
# term is their only signal: Hinton et al. (2015) found the best results with "a considerably lower
# weight" on the hard term, and on flowers17 (10 labels and 50 unlabelled images per class,
# BENCHMARKS.md) alpha 0.9 scored 0.8775 mean over 3 seeds against 0.8686 at 0.5 (hard pseudo-labels:
# 0.8804). Without one, 0.5: at 0.9 the fine-tuned teacher's near one-hot outputs on its own
# training images cost the student 2.6 points there (0.9088 vs 0.9353).
ALPHA_WITH_TRANSFER_SET, ALPHA = 0.9, 0.5


def _default_alpha(config: DistillConfig) -> float:
    return ALPHA_WITH_TRANSFER_SET if config.unlabelled_dir else ALPHA


def continue_run(run, saved: dict, *, given: dict, strict: bool = False, progress: bool = True) -> FitResult:
    """Continue a killed distillation run (see :func:`graft.recipes.resume.resume`)."""
    return continue_training(run, saved, DistillConfig, RECIPE, given=given, strict=strict, progress=progress)


def teacher_outputs(teacher, folder, batch_size: int, progress: bool) -> torch.Tensor:
    """The teacher's logits ``[N, classes]`` for every image of ``folder``, in order, at its own
    preprocessing."""
    loader = DataLoader(ImageDataset(folder, teacher.preprocessing, "none"), batch_size=batch_size)
    bar = progress_bar(len(loader), "teacher outputs", "batch", progress)
    chunks = []
    with torch.inference_mode():
        for images, _ in loader:
            chunks.append(teacher(images))
            bar.update(1)
    bar.close()
    return torch.cat(chunks)


def transfer_set(root, *, first_only: bool = False, strict: bool = False, progress: bool = False,
                 known: dict | None = None) -> tuple[ImageFolder, list[dict]]:
    """(the readable images below ``root``, any layout, labels -1; the skipped ones as
    ``{"path", "reason"}``), each unreadable one warned (``strict``: raised). ``first_only``
    stops at the first image that decodes: the cheap check before a run starts. ``known``:
    {what ("validation", "test", "labelled training"): image paths the run scores or trains on
    with labels}; a transfer image with the same content as one of them (the same file, a link,
    a byte-identical copy) is left out, one warning per kind and a skipped entry each: the
    student learning the teacher's outputs on an image the run scores makes that score
    optimistic, and a labelled training image is learnt from its label already. Raises
    DataError naming ``root`` when it is missing or not a folder, or when no image in it is
    left and decodes."""
    folder, left_out = _without_known(_scanned_transfer(root), known or {})
    if first_only:
        _require_one(_first_readable(folder))
        return folder, left_out
    found, skipped = readable_images(folder, strict, progress)
    _require_one(found)
    return found, left_out + skipped


def _first_readable(folder: ImageFolder) -> ImageFolder:
    """``folder`` when one of its images decodes (it stops at the first), else an empty folder:
    the cheap check before a run starts."""
    from graft.data.datasets import CHECK_MIN_SIDE
    from graft.data.decode import load_image

    for record in folder.records:
        try:
            load_image(record.path, min_side=CHECK_MIN_SIDE)
            return folder
        except ImageDecodeError:
            continue
    return folder.subset([])


def _scanned_transfer(root) -> ImageFolder:
    """Every file below ``root`` (labels -1); DataError when it is missing or a file."""
    path = Path(os.path.abspath(os.path.expanduser(os.fspath(root))))
    if not path.is_dir():  # missing, or a file: said as such
        scan_unlabelled(path, flag="--unlabelled")
    try:
        return scan_unlabelled(path)
    except DataError:  # a folder without files: said later, as a folder without a readable image
        return ImageFolder(path, [], [])


def _require_one(found: ImageFolder) -> None:
    if len(found) == 0:
        raise DataError(f"--unlabelled {found.root}: no readable image in this folder (nor below it)")


def known_images(train: ImageFolder, val: ImageFolder | None, test: ImageFolder | None) -> dict:
    """What a transfer set must not hold (:func:`transfer_set`'s ``known``): the scored images
    first, so an image in both is reported as scored."""
    known = {"validation": val.paths if val is not None else [], "test": test.paths if test is not None else [],
             "labelled training": train.paths}
    return {what: paths for what, paths in known.items() if paths}


def _without_known(folder: ImageFolder, known: dict) -> tuple[ImageFolder, list[dict]]:
    """``folder`` without the images whose content is in ``known`` (see :func:`transfer_set`)."""
    if not known or not len(folder):
        return folder, []
    shared = overlaps({"--unlabelled": folder.paths, **known})
    why = {}  # transfer image -> (what, the known image with its content)
    for what in known:
        for mine, other in shared.get(("--unlabelled", what), []):
            why.setdefault(mine, (what, other))
    if not why:
        return folder, []
    if len(why) == len(folder):
        mine, (what, other) = next(iter(sorted(why.items())))
        kinds = " or ".join(dict.fromkeys(what for what, _ in why.values()))
        raise DataError(f"--unlabelled {folder.root}: all {len(folder)} of its images are also {kinds} images "
                        f"(same content), e.g. {_example(mine, other)}: a transfer set needs images the run neither "
                        "scores nor trains on with their labels")
    for kind in dict.fromkeys(what for what, _ in why.values()):
        mine = sorted(path for path, (what, _) in why.items() if what == kind)
        reason = ("they are trained on with their labels already" if kind == "labelled training" else
                  f"the student learning the teacher's outputs on them would make the {kind} score optimistic")
        warnings.warn(f"{len(mine)} of {len(folder)} --unlabelled image(s) are also {kind} images (same content), "
                      f"e.g. {_example(mine[0], why[mine[0]][1])}: left out of the transfer set ({reason})",
                      stacklevel=3)
    kept = [i for i, record in enumerate(folder.records) if record.path not in why]
    skipped = [{"path": str(path), "reason": f"also a {what} image (same content as {other}): left out of the "
                                              "transfer set"} for path, (what, other) in sorted(why.items())]
    return folder.subset(kept), skipped


def _example(mine: Path, other: Path) -> str:
    return str(mine) if mine == other else f"{mine} = {other}"


@dataclass(frozen=True)
class TransferSet:
    """A run's transfer set as scanned (``folder``: empty without ``--unlabelled``), and the
    images left out of it as known ones (``{"path", "reason"}``)."""

    folder: ImageFolder
    left_out: tuple = ()


def _folders(c: DistillConfig, data: RunData) -> tuple[TransferSet, dict]:
    """The transfer set, scanned once, without the images the run scores or trains on with
    labels; {"unlabelled": the folder as scanned} for data.json."""
    if not c.unlabelled_dir:
        return TransferSet(ImageFolder(data.train.root, [], [])), {}
    scanned = _scanned_transfer(c.unlabelled_dir)
    folder, left_out = _without_known(scanned, known_images(data.train, data.val, data.test))
    _require_one(_first_readable(folder))  # before the data's warnings are said: a refusal is one line
    return TransferSet(folder, tuple(left_out)), {"unlabelled": scanned}


def _readable(c: DistillConfig, data: RunData, strict: bool, progress: bool) -> tuple[ImageFolder, list]:
    """The plan's ``own``: the transfer set's readable images (DataError when none is)."""
    if not c.unlabelled_dir:
        return data.own.folder, []
    found, skipped = readable_images(data.own.folder, strict, progress)
    _require_one(found)
    return found, list(data.own.left_out) + skipped


def _training_images(plan: TrainingPlan) -> ImageFolder:
    """The labelled training images, then the transfer set's (label -1)."""
    return ImageFolder(plan.train.root, plan.train.classes, plan.train.records + plan.own.records)


def _dataset(plan: TrainingPlan, dataset: ImageDataset) -> WithIndex:
    if len(plan.own):
        dataset = ImageDataset(_training_images(plan), dataset.preprocessing, dataset.augment)
    return WithIndex(dataset)


def _method(plan: TrainingPlan, strict: bool, progress: bool) -> Distillation:
    """The teacher, loaded once (GraftError when its classes are not the data's), and its
    outputs on every training image (the transfer set's too), computed once; with
    ``teacher_inputs="augmented"`` the teacher itself for augmented batches (resized and
    re-normalised to its own input)."""
    from graft.artifacts.model import GraftModel
    from graft.data.folders import class_name

    c = plan.config
    teacher = GraftModel.load(c.teacher).eval()
    if [class_name(name) for name in teacher.classes] != list(plan.train.classes):  # one Unicode form, as scanning
        raise GraftError(f"the teacher {c.teacher} knows classes {teacher.classes}, but {c.train_dir} has "
                         f"{plan.train.classes}: distillation needs the same classes in the same order")
    logits = teacher_outputs(teacher, _training_images(plan), c.batch_size, progress)
    student, own = plan.preprocessing, teacher.preprocessing
    on_batches = TeacherOnStudentInputs(teacher, own.size, student.mean, student.std, own.mean, own.std) \
        if c.teacher_inputs == "augmented" else None
    weights = None
    if c.class_weight == "balanced":  # of the labelled images: the hard term's
        from graft.methods.supervised import balanced_class_weights

        weights = balanced_class_weights(plan.train.labels, len(plan.train.classes))
    return Distillation(logits, temperature=c.temperature, alpha=c.alpha, teacher=on_batches, mixer=plan.mixer,
                        transfer_set=bool(c.unlabelled_dir), class_weights=weights)


def _results(run, plan: TrainingPlan, model) -> dict:
    return {"n_unlabelled": len(plan.own)} if plan.config.unlabelled_dir else {}


RECIPE = NetworkRecipe(folders=_folders, readable=_readable, dataset=_dataset, method=_method, results=_results)
