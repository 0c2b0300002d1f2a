"""Teacher-student distillation (``graft distill``): a student backbone trained from a graft
run's outputs and the labels, on the fine-tuning engine with
:class:`~graft.methods.distillation.Distillation` as its method."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from graft.errors import GraftError
from graft.methods.distillation import Distillation


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


def distill(teacher_dir, data_dir, out, *, student, temperature=4.0, alpha=0.5, stages="head:5,top2:5", **training):
    """Train ``student`` (a backbone name) on ``data_dir`` from the teacher run's outputs and the
    labels. ``alpha=0`` is the same student trained without the teacher. Stages that train
    backbone layers see augmented images (``augment``, as in fine-tuning) and the teacher runs
    on each of those batches; head stages use its outputs on the plain images, computed once."""
    from graft.data.folders import scan_folder
    from graft.recipes.finetune import finetune
    from graft.artifacts.model import GraftModel

    if temperature <= 0:
        raise GraftError(f"--temperature must be positive, got {temperature}")
    if not 0 <= alpha <= 1:
        raise GraftError(f"--alpha must be between 0 and 1, got {alpha}")
    teacher = GraftModel.load(teacher_dir)
    classes = scan_folder(data_dir).classes
    if list(teacher.classes) != list(classes):
        raise GraftError(f"the teacher {teacher_dir} knows classes {teacher.classes}, but {data_dir} has {classes}: "
                         "distillation needs the same classes in the same order")
    return finetune(data_dir, out, backbone=student, stages=stages, teacher=teacher_dir, temperature=temperature,
                    alpha=alpha, command="distill", **training)


def teacher_outputs(teacher, folder, batch_size: int, progress: bool) -> torch.Tensor:
    """The teacher's logits for every image of ``folder``, in order, at its own preprocessing."""
    from graft.recipes.finetune import ImageDataset
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
                        mixer=parts.loop.mixer)
