"""Teacher-student distillation (``graft distill``): a student backbone trained from a graft
run's outputs and the labels, on the fine-tuning engine with
:class:`~graft.methods.distillation.Distillation` as its method."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from graft.errors import GraftError
from graft.methods.distillation import Distillation
from graft.recipes._run import FitResult, as_config
from graft.recipes.settings import DistillConfig


class WithIndex(Dataset):
    """(image, label) -> (image, tensor([label, index])): the index finds the teacher's outputs."""

    def __init__(self, dataset):
        self.dataset = dataset
        self.records = getattr(dataset, "records", None)

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        image, label = self.dataset[index]
        return image, torch.tensor([label, index])


def distill(config, out, *, strict: bool = False, progress: bool = True, overwrite: bool = False,
            **settings) -> FitResult:
    """Train the student ``config.backbone`` on ``config.train_dir`` from the teacher run's
    outputs and the labels. ``alpha=0`` is the same student trained without the teacher. Stages
    that train backbone layers see augmented images (``augment``, as in fine-tuning) and the
    teacher runs on each of those batches; head stages use its outputs on the plain images,
    computed once. Raises GraftError when the teacher's classes differ from the data's."""
    from graft.artifacts.model import GraftModel
    from graft.data.folders import scan_folder
    from graft.recipes.finetune import start_training

    config = as_config(DistillConfig, config, settings)
    teacher = GraftModel.load(config.teacher)
    classes = scan_folder(config.train_dir).classes
    if list(teacher.classes) != list(classes):
        raise GraftError(f"the teacher {config.teacher} knows classes {teacher.classes}, but {config.train_dir} has "
                         f"{classes}: distillation needs the same classes in the same order")
    return start_training(config, out, strict=strict, progress=progress, overwrite=overwrite)


def continue_run(run, saved, *, given, strict=False, progress=True) -> FitResult:
    """Continue a killed distillation run (the fine-tuning engine with the distillation method)."""
    from graft.recipes.finetune import continue_run as continue_training

    return continue_training(run, saved, given=given, strict=strict, progress=progress)


def teacher_outputs(teacher, folder, batch_size: int, progress: bool) -> torch.Tensor:
    """The teacher's logits for every image of ``folder``, in order, at its own preprocessing."""
    from graft.data.datasets import ImageDataset
    from graft._io.progress import progress_bar

    loader = DataLoader(ImageDataset(folder, teacher.preprocessing, "none"), batch_size=batch_size)
    bar = progress_bar(len(loader), "teacher outputs", "batch", progress)
    chunks = []
    with torch.inference_mode():
        for images, _ in loader:
            chunks.append(teacher(images))
            bar.update(1)
    bar.close()
    return torch.cat(chunks)


def distillation_method(s: dict, parts, progress: bool) -> Distillation:
    """Index the training loaders' targets and compute the teacher's outputs once."""
    from graft.artifacts.model import GraftModel
    from graft.methods.distillation import TeacherOnStudentInputs

    teacher = GraftModel.load(s["teacher"]).eval()
    logits = teacher_outputs(teacher, parts.train, s["batch_size"], progress)
    student, own = parts.preprocessing, teacher.preprocessing
    on_batches = TeacherOnStudentInputs(teacher, own.size, student.mean, student.std, own.mean, own.std)
    for name in ("plain_loader", "train_loader"):
        loader = getattr(parts, name)
        if not isinstance(loader.dataset, WithIndex):
            setattr(parts, name, DataLoader(WithIndex(loader.dataset), batch_size=loader.batch_size,
                                            shuffle=True, generator=parts.generator, drop_last=loader.drop_last))
    return Distillation(logits, temperature=s["temperature"], alpha=s["alpha"], teacher=on_batches,
                        mixer=parts.mixer)
