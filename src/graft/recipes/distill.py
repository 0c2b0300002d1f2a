"""``graft distill``: a student backbone trained from a graft run's outputs and the labels
(Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network", 2015), on the shared
training path with :class:`~graft.methods.distillation.Distillation` as its method."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from graft._io.progress import progress_bar
from graft.data.datasets import ImageDataset, readable_images
from graft.data.folders import ImageFolder, scan_unlabelled
from graft.errors import DataError, GraftError, ImageDecodeError
from graft.methods.distillation import Distillation, TeacherOnStudentInputs
from graft.recipes._run import FitResult, as_config
from graft.recipes._training import Hooks, Parts, continue_training, start_training
from graft.recipes.settings import DistillConfig

__all__ = ["DistillConfig", "WithIndex", "continue_run", "distill", "teacher_outputs", "transfer_set"]


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
    """Train the student ``config.backbone`` on ``config.train_dir`` from the teacher run's
    outputs and the labels. ``alpha=0`` is the same student trained without the teacher; ``alpha=None``
    (the default) is 0.9 with a transfer set and 0.5 without. Stages
    that train backbone layers see augmented images (``augment``, as in fine-tuning) and the
    teacher runs on each of those batches; head stages use its outputs on the plain images,
    computed once. The loaders are fine-tuning's (``sampler`` shuffle or balanced, one shard per
    process under torchrun). ``config.unlabelled_dir``: a transfer set (Hinton et al. 2015) of
    unlabelled images the student learns from the teacher's soft targets alone, in every epoch
    beside the labelled ones (RUN/data.json lists them; metrics.json counts them). Raises
    GraftError when the teacher's classes differ from the data's, DataError when the unlabelled
    folder holds no readable image."""
    from graft.artifacts.model import GraftModel
    from graft.data.folders import class_name, scan_folder

    config = as_config(DistillConfig, config, settings)
    if config.alpha is None:
        config = config.replace(alpha=_default_alpha(config))
    if config.unlabelled_dir:  # fails before anything is written
        transfer_set(config.unlabelled_dir, first_only=True)
    teacher = GraftModel.load(config.teacher)
    classes = scan_folder(config.train_dir).classes
    if [class_name(c) for c in teacher.classes] != list(classes):  # one Unicode form, as scanning
        raise GraftError(f"the teacher {config.teacher} knows classes {teacher.classes}, but {config.train_dir} has "
                         f"{classes}: distillation needs the same classes in the same order")
    return start_training(config, out, HOOKS, strict=strict, progress=progress, overwrite=overwrite)


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
    return continue_training(run, saved, DistillConfig, HOOKS, given=given, strict=strict, progress=progress)


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


def transfer_set(root, *, first_only: bool = False, strict: bool = False,
                 progress: bool = False) -> tuple[ImageFolder, list[dict]]:
    """(the readable images below ``root``, any layout, labels -1; the skipped ones as
    ``{"path", "reason"}``), each unreadable one warned (``strict``: raised). ``first_only``
    stops at the first image that decodes: the cheap check before a run starts. Raises
    DataError naming ``root`` when no image in it decodes."""
    from graft.data.decode import load_image

    try:
        folder = scan_unlabelled(root)
    except DataError:
        folder = ImageFolder(root, [], [])
    if first_only:
        for record in folder.records:
            try:
                load_image(record.path)
                return folder, []
            except ImageDecodeError:
                continue
        found, skipped = folder.subset([]), []
    else:
        found, skipped = readable_images(folder, strict, progress)
    if len(found) == 0:
        raise DataError(f"--unlabelled {root}: no readable image in this folder (nor below it)")
    return found, skipped


def _transfer(parts: Parts) -> ImageFolder:
    """The run's transfer set (empty without ``--unlabelled``), checked once per run."""
    if "transfer" not in parts.extras:
        folder, skipped = ImageFolder(parts.train.root, [], []), []
        if parts.config.unlabelled_dir:
            folder, skipped = transfer_set(parts.config.unlabelled_dir)
        parts.skipped += skipped
        parts.extras["transfer"] = folder
    return parts.extras["transfer"]


def _training_images(parts: Parts) -> ImageFolder:
    """The labelled training images, then the transfer set's (label -1)."""
    return ImageFolder(parts.train.root, parts.train.classes, parts.train.records + _transfer(parts).records)


def _dataset(parts: Parts, dataset: ImageDataset) -> WithIndex:
    if len(_transfer(parts)):
        dataset = ImageDataset(_training_images(parts), dataset.preprocessing, dataset.augment)
    return WithIndex(dataset)


def _method(parts: Parts, strict: bool, progress: bool) -> Distillation:
    """The teacher's outputs on every training image (the transfer set's too), computed once;
    with ``teacher_inputs="augmented"`` the teacher itself for augmented batches (resized and
    re-normalised to its own input)."""
    from graft.artifacts.model import GraftModel

    c = parts.config
    teacher = GraftModel.load(c.teacher).eval()
    logits = teacher_outputs(teacher, _training_images(parts), c.batch_size, progress)
    student, own = parts.preprocessing, teacher.preprocessing
    on_batches = TeacherOnStudentInputs(teacher, own.size, student.mean, student.std, own.mean, own.std) \
        if c.teacher_inputs == "augmented" else None
    return Distillation(logits, temperature=c.temperature, alpha=c.alpha, teacher=on_batches, mixer=parts.mixer,
                        transfer_set=bool(c.unlabelled_dir))


def _results(run, parts: Parts, model) -> dict:
    return {"n_unlabelled": len(_transfer(parts))} if parts.config.unlabelled_dir else {}


HOOKS = Hooks(method=_method, dataset=_dataset, results=_results)
