"""Run plumbing every recipe shares: open a run folder only after every check has passed,
the data manifest a resume is checked against, resume checks, scoring a labelled held-out
folder into ``RUN/<sub>/``, and the result a recipe returns."""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

from graft._io.files import read_json, read_yaml, write_atomic
from graft.artifacts.run_folder import RunDir, held_out_summary
from graft.data.folders import ImageFolder, scan_folder, scan_unlabelled
from graft.data.manifest import folder_manifest, manifest_changes
from graft.data.overlap import check_output_outside
from graft.errors import DataError, GraftError
from graft.recipes.settings.versions import read_settings
from graft.reporting.metrics import Scored

CHECKPOINT = Path("checkpoints") / "last.pt"


@dataclass
class FitResult:
    """What a recipe returns: its run folder and the metrics written to ``metrics.json``
    (empty on a non-zero rank under torchrun, where rank 0 writes)."""

    run_dir: Path
    metrics: dict

    @property
    def model(self):
        """The saved model, loaded (imports torch)."""
        from graft.artifacts.model import GraftModel

        return GraftModel.load(self.run_dir)


def as_config(config_cls, data, settings: dict):
    """``recipe(config, out)`` or the shorthand ``recipe(data_dir, out, **settings)``."""
    if isinstance(data, config_cls):
        if settings:
            raise GraftError(f"pass settings in the {config_cls.__name__} or as keywords, not both: "
                             f"{', '.join(sorted(settings))}")
        return data
    return config_cls(train_dir=data, **settings)


def check_not_an_input(out, config) -> None:
    """``-o`` may not be, hold, or lie inside any folder the command of ``config`` (a recipe's
    Config) reads: its data, --val, --test, target and transfer-set folders, multitask tasks,
    a teacher, a ``--backbone`` or ``--transfer-from`` run. One GraftError naming both."""
    inputs = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.name in ("tasks", "val_dirs"):  # multitask: NAME=DIR
            inputs.update({(f"task {name} folder" if f.name == "tasks" else f"--val {name} folder"): folder
                           for name, folder in value.items()})
        elif isinstance(value, str) and f.name in ("teacher", "backbone", "transfer_from"):
            inputs[f"{config.flag(f.name).lstrip('-')} run"] = value
        elif isinstance(value, str) and f.metadata.get("path"):
            inputs[f"{config.flag(f.name)} folder"] = value
    check_output_outside(out, inputs)


def is_resumable(run_dir) -> bool:
    """Does ``run_dir`` hold a training run with a finished epoch to continue from?"""
    return (Path(run_dir) / CHECKPOINT).is_file()


def write_manifest(run: RunDir, manifests: dict) -> None:
    """RUN/data.json: every data folder's file list, which a resume compares with the disk."""
    write_atomic(run.path / "data.json", json.dumps(manifests) + "\n")


# data.json's parts -> the Config field of their folder: every folder a run trains on (the training
# folder, adapt's --target, distill's transfer set) or scores each epoch (--val, adapt's --target-val).
MANIFEST_PARTS = {"train": "train_dir", "val": "val_dir", "target": "target_dir", "unlabelled": "unlabelled_dir",
                  "target_val": "target_val_dir"}
UNLABELLED_PARTS = ("target", "unlabelled")  # any layout, folder names ignored


def manifest_of(root, classes=None, unlabelled: bool = False) -> dict:
    """:func:`folder_manifest` of ``root`` as the run reads it (labelled against ``classes``, or
    any layout); its warnings were said when the data was loaded."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return folder_manifest(scan_unlabelled(root) if unlabelled else scan_folder(root, classes=classes))


def read_saved(run_dir) -> tuple[RunDir, dict]:
    """(run, config.yaml) of a training run folder, or a GraftError saying why it is none."""
    run = RunDir(run_dir)
    config_path = run.path / "config.yaml"
    if not config_path.exists():
        raise GraftError(f"cannot resume: {config_path} does not exist (not a graft training run folder)")
    config = read_yaml(config_path)
    if not isinstance(config.get("settings"), dict):
        raise GraftError(f"cannot resume: {config_path} holds no saved settings")
    return run, read_settings(config, config_path)  # an older graft's settings, as this graft writes them


def check_resumable(run: RunDir) -> None:
    if (run.path / "metrics.json").exists():
        raise GraftError(f"{run.path} is a finished run (metrics.json written): nothing to resume. To train "
                         "longer or differently, start a new run with another -o (or --overwrite this one)")
    if not is_resumable(run.path):
        raise GraftError(f"cannot resume {run.path}: no epoch finished before it stopped (no checkpoints/last.pt); "
                         "run the same command again without --resume to start over")


def check_resume_arguments(run_dir: Path, saved: dict, given: dict, config_cls=None) -> None:
    """Settings repeated on the command line must equal the saved ones (a run cannot change
    course halfway); every difference is listed in one error. With ``config_cls`` the typed
    values are read as the Config reads them (NAME=DIR lists become dicts, paths absolute)."""
    if config_cls is not None:
        _check_whole(run_dir, saved, config_cls)
    conflicts = []
    unknown = sorted(set(given) - set(saved))
    if unknown:
        raise GraftError(f"unknown setting {unknown[0]!r}")
    if config_cls is not None and given:
        typed = config_cls.from_dict({**saved, **given}).to_dict()
        given = {key: typed[key] for key in given}
    for key, value in given.items():
        if key in ("train_dir", "val_dir", "test_dir", "target_dir", "target_val_dir", "teacher", "weights") \
                and value:
            value = str(Path(value).expanduser().resolve())
        if value != saved[key] and not (isinstance(value, float) and isinstance(saved[key], (int, float))
                                        and abs(value - saved[key]) <= 1e-12 * max(1.0, abs(value))):
            conflicts.append(f"{key} {value!r} (the run has {saved[key]!r})")
    if conflicts:
        raise GraftError(f"--resume {run_dir} continues the run with its saved settings; these differ: "
                         + "; ".join(conflicts) + ". Leave them out, or start a new run with another -o")


def _check_whole(run_dir: Path, saved: dict, config_cls) -> None:
    """A config.yaml cut short still parses, without its last settings. A setting that is off by
    default (None, False, 0) may be missing: runs written before it existed did without it."""
    missing = [f.name for f in dataclasses.fields(config_cls) if f.name not in saved
               and f.default not in (None, False, 0) and not f.metadata.get("hidden")]
    if missing:
        raise GraftError(f"cannot resume: {Path(run_dir) / 'config.yaml'} lacks the setting(s) {', '.join(missing)}; "
                         "the file is damaged or cut short, so restore it or start the run again with --overwrite")


def check_data_unchanged(run_dir: Path, roots: dict, now: dict | None = None) -> None:
    """``roots``: {manifest key: folder}; ``now``: {manifest key: manifest} of the folders as
    the resumed run scanned them (without it, each folder is scanned here). Files gone, added
    or rewritten, or a class added since the run started, are one error listing them (the
    split or the images would differ)."""
    manifest_path = run_dir / "data.json"
    if not manifest_path.exists():  # run folders written before manifests existed
        return
    manifest = read_json(manifest_path)
    train_classes = (manifest.get("train") or {}).get("classes")
    problems = []
    for part, root in roots.items():
        if manifest.get(part) is None or root is None:
            continue
        unlabelled = part in UNLABELLED_PARTS  # adapt's target, distill's transfer set
        classes = None if part == "train" or unlabelled or train_classes is None else train_classes
        try:
            current = now[part] if now and now.get(part) is not None else manifest_of(root, classes, unlabelled)
        except DataError as exc:
            problems.append(str(exc))
            continue
        problems += [f"{root}: {change}" for change in manifest_changes(manifest[part], current)]
    if problems:
        raise GraftError("cannot resume: the data changed since the run started (the split, the classes or the "
                         "images would differ): " + "; ".join(problems)
                         + ". Restore the data, or start a new run with another -o or --overwrite")


def init_distributed() -> bool:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); gloo runs on CPUs."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return True


def score_folder(run: RunDir, model, folder: ImageFolder, *, subdir: str, title: str, batch_size: int,
                 extra: dict) -> dict:
    """Score ``model`` (a GraftModel) on a labelled ``folder``: reports in ``RUN/<subdir>/``
    (metrics.json, report.txt, confusion matrix, predictions.csv); returns the
    short summary metrics.json of the run keeps (accuracy, macro F1, top-k, counts, folder)."""
    from torch.utils.data import DataLoader

    from graft.data.datasets import ImageDataset
    from graft.methods.base import evaluate_loader

    loader = DataLoader(ImageDataset(folder, model.preprocessing, "none"), batch_size=batch_size)
    _, _, y_true, y_pred, probabilities = evaluate_loader(model, loader, with_probabilities=True)
    scored = Scored(y_true, y_pred, model.classes, probabilities, [record.path for record in folder.records], subdir)
    metrics = run.write_report(scored, {**extra, "data_dir": str(folder.root)}, subdir=subdir, title=title)
    return held_out_summary(metrics)
