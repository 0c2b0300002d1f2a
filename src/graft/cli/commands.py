"""The ``graft`` command line: parse arguments, call the library, print. No logic of its own."""
from __future__ import annotations

import csv
import json
import sys
import warnings
from pathlib import Path

import click

from graft.defaults import DEFAULT_BACKBONE, DEFAULT_STAGES, HEAD_NAMES
from graft.errors import GraftError


def _show_warning(message, category, filename, lineno, file=None, line=None):
    click.echo(f"warning: {message}", err=True)


class GraftGroup(click.Group):
    """Turns GraftError (bad input, bad options) into one clear line and exit code 2."""

    def invoke(self, ctx):
        warnings.showwarning = _show_warning
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        try:
            return super().invoke(ctx)
        except GraftError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)


@click.group(cls=GraftGroup)
@click.version_option(package_name="graft")
def main():
    """graft: transfer learning for image classifiers, fast and offline on a CPU."""


def _common_data_options(fn):
    fn = click.option("--strict", is_flag=True, help="Stop at the first unreadable image instead of skipping it.")(fn)
    fn = click.option("--engine", type=click.Choice(["auto", "onnx", "torch"]), default="auto", show_default=True,
                      help="Frozen inference engine (auto: ONNX Runtime when installed).")(fn)
    fn = click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)(fn)
    fn = click.option("--no-cache", is_flag=True, help="Do not read or write the feature cache.")(fn)
    fn = click.option("--quiet", "-q", is_flag=True, help="No progress bars.")(fn)
    return fn


def _training_data_options(out_required: bool = True):
    """DATA, --out RUN_DIR and the validation choice, shared by every training command."""
    return lambda fn: _add_training_data_options(fn, out_required)


def _add_training_data_options(fn, out_required: bool):
    fn = click.option("--val-split", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
                      help="Hold out this stratified fraction of DATA (default 0.2 when --val is not given).")(fn)
    fn = click.option("--val", "val_dir", type=click.Path(), default=None, help="Validation class-folder tree.")(fn)
    fn = click.option("--overwrite", is_flag=True,
                      help="Write into a non-empty -o folder: graft's own outputs there are removed first, "
                           "other files are kept.")(fn)
    fn = click.option("--out", "-o", required=out_required, type=click.Path(file_okay=False),
                      help="Run folder to write (new, empty, or an earlier run of the same command).")(fn)
    return click.argument("data", type=click.Path())(fn)


def _layer_name(ctx, param, value):
    if value is not None and not value.strip():
        raise click.BadParameter("must name a layer (or an index) from `graft layers`; leave it out for the "
                                 "final pooled features")
    return value


def _test_option(fn):
    return click.option("--test", "test_dir", type=click.Path(), default=None,
                        help="A labelled test folder, scored once at the end with the model validation chose "
                             "(reports in RUN/test/; metrics.json keeps validation and test apart).")(fn)


def _transfer_options(fn):
    fn = click.option("--freeze-transferred", is_flag=True, help="Keep the copied layers frozen in every stage.")(fn)
    fn = click.option("--transfer-from", default=None,
                      help="Where the copied layers come from: a backbone name or a graft run folder "
                           "(default: --backbone).")(fn)
    fn = click.option("--transfer-layers", default=None,
                      help="first:K, last:K or NAME[,NAME...]: copy these layers into a freshly initialised "
                           "network of the same architecture; the rest starts random.")(fn)
    return fn


def _class_weight_option(fn):
    return click.option("--class-weight", type=click.Choice(["balanced"]), default=None,
                        help="Weigh each class by n / (classes x its count), as scikit-learn's 'balanced', "
                             "so a small class is not ignored.")(fn)


def _backbone_options(fn):
    fn = click.option("--image-size", type=click.IntRange(32), default=None,
                      help="Input resolution (default: the weights' own).")(fn)
    fn = click.option("--layer", default=None, callback=_layer_name,
                      help="Cut layer: name or index from `graft layers` (default: final pooled).")(fn)
    fn = click.option("--weights", type=click.Path(dir_okay=False), default=None,
                      help="Local .safetensors/.pth weights for a timm architecture.")(fn)
    fn = click.option("--backbone", "-b", default=DEFAULT_BACKBONE, show_default=True)(fn)
    return fn


@main.command()
def backbones():
    """List the registered backbones and where their weights come from."""
    from graft.backbones import list_backbones

    for entry in list_backbones():
        click.echo(f"{entry.name:28s} {entry.source:44s} {entry.description}")
    click.echo("\nAny timm architecture also works with --weights FILE (or online, from timm's hub).")


@main.command()
@click.argument("backbone", default=DEFAULT_BACKBONE)
@click.option("--weights", type=click.Path(dir_okay=False), default=None)
@click.option("--image-size", type=click.IntRange(32), default=None)
@click.option("--transfer-layers", default=None, help="Mark the layers this first:K / last:K / NAME,... spec copies.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead of a table.")
def layers(backbone, weights, image_size, transfer_layers, as_json):
    """List a backbone's layers: index, name, type, output shape, parameters, trainable.

    BACKBONE is a registered name, a timm architecture (with --weights) or a graft run folder.
    """
    from graft.backbones import create_backbone

    source = create_backbone(backbone, weights=weights)
    infos = source.layers(image_size)
    copied = set()
    if transfer_layers:
        from graft.backbones.transfer import resolve_transfer

        copied = set(resolve_transfer(transfer_layers, source.model))
    if as_json:
        for info in infos:
            click.echo(json.dumps({**info.__dict__, **({"transferred": info.name in copied} if copied else {})}))
        return
    mark = "  transferred" if copied else ""
    click.echo(f"{'idx':>3}  {'name':22s} {'type':24s} {'output':18s} {'params':>10}  trainable{mark}")
    for i in infos:
        shape = "x".join(str(d) for d in i.output_shape) or "-"
        copy = ("  copied" if i.name in copied else "  -") if copied else ""
        click.echo(f"{i.index:>3}  {i.name:22s} {i.type:24s} {shape:18s} {i.params:>10,}  "
                   f"{'yes' if i.trainable else 'no':9s}{copy}")
    click.echo(f"total parameters: {sum(i.params for i in infos):,}")


@main.command()
@click.argument("data", type=click.Path())
@click.option("--out", "-o", required=True, type=click.Path(), help="Output .npz (features, labels, paths, classes).")
@_backbone_options
@_common_data_options
def extract(data, out, backbone, weights, layer, image_size, strict, engine, batch_size, no_cache, quiet):
    """Write frozen backbone features of a class-folder tree to an .npz file."""
    from graft.data.folders import scan_folder
    from graft.features.extractor import FeatureExtractor

    folder = scan_folder(data)
    extractor = FeatureExtractor(backbone, layer=layer, weights=weights, image_size=image_size,
                                 batch_size=batch_size, engine=engine, cache=not no_cache,
                                 progress=not quiet).fit()
    features = extractor.extract_folder(folder, strict=strict)
    path = features.save(out)
    click.echo(f"wrote {path}: {features.vectors.shape[0]} images x {features.vectors.shape[1]} features "
               f"({features.cached} from cache, {len(features.skipped)} skipped)")


@main.command()
@_training_data_options()
@click.option("--head", type=click.Choice(list(HEAD_NAMES)), default="logreg", show_default=True)
@_class_weight_option
@_test_option
@click.option("--final", is_flag=True,
              help="Refit the head on training + validation images with the C validation chose, before saving.")
@click.option("--shots", type=click.IntRange(1), default=None,
              help="Fit on this many training images per class (seeded), to see what K labels buy.")
@click.option("--seed", type=int, default=0, show_default=True)
@_backbone_options
@_common_data_options
def fit(data, out, overwrite, val_dir, val_split, head, class_weight, test_dir, final, shots, seed, backbone,
        weights, layer, image_size, strict, engine, batch_size, no_cache, quiet):
    """Frozen features + a classical head (C chosen by cross-validation) -> a run folder."""
    from graft.recipes.frozen import fit_frozen

    result = fit_frozen(data, out, val_dir=val_dir, val_fraction=val_split, backbone=backbone,
                        weights=weights, layer=layer, head=head, image_size=image_size, seed=seed,
                        strict=strict, engine=engine, batch_size=batch_size, cache=not no_cache,
                        progress=not quiet, overwrite=overwrite, class_weight=class_weight, test_dir=test_dir,
                        final=final, shots=shots)
    _print_summary(result.run_dir, result.metrics)


class _LearningRate(click.ParamType):
    """A positive float, or ``auto`` (an LR range test picks it)."""

    name = "LR|auto"

    def convert(self, value, param, ctx):
        if isinstance(value, float) or value == "auto":
            return value
        try:
            lr = float(value)
        except ValueError:
            self.fail(f"{value!r} is neither a number nor 'auto'", param, ctx)
        if lr <= 0:
            self.fail(f"{value!r} must be positive", param, ctx)
        return lr


def _finetune_model_options(fn):
    """Options that decide the model and its training step, shared by finetune and lr-find."""
    fn = click.option("--weights", type=click.Path(dir_okay=False), default=None)(fn)
    fn = click.option("--backbone", "-b", default=DEFAULT_BACKBONE, show_default=True)(fn)
    fn = click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)(fn)
    fn = click.option("--image-size", type=click.IntRange(32), default=None,
                      help="Train and evaluate at this resolution.")(fn)
    fn = click.option("--seed", type=int, default=0, show_default=True)(fn)
    fn = click.option("--optimizer", type=click.Choice(["adamw", "adam", "sgd", "rmsprop"]), default="adamw",
                      show_default=True)(fn)
    fn = click.option("--layer-decay", type=click.FloatRange(0, 1, min_open=True), default=None,
                      help="Layer-wise LR decay: each trainable backbone layer below the top one trains "
                           "at this times the LR of the layer above it.")(fn)
    fn = click.option("--base-lr-factor", type=click.FloatRange(0, min_open=True), default=0.1, show_default=True,
                      help="Unfrozen backbone layers train at lr x this.")(fn)
    fn = click.option("--head", default="linear", show_default=True,
                      help="linear, or mlp:HIDDEN (FC-ReLU-Dropout-FC).")(fn)
    return fn


@main.command()
@_training_data_options(out_required=False)
@click.option("--stages", default=DEFAULT_STAGES, show_default=True,
              help="Stage plan NAME:EPOCHS,... with NAME head, topN or all.")
@click.option("--freeze-first", default=None, help="Instead of the plan's freezing: freeze the first K layers "
              "(index or name from `graft layers`), train the rest.")
@click.option("--lr", type=_LearningRate(), default=1e-3, show_default=True,
              help="Head learning rate, or 'auto': an LR range test on the first stage picks it "
                   "(lr_find.png in the run folder).")
@_finetune_model_options
@click.option("--schedule", type=click.Choice(["cosine", "onecycle"]), default="cosine", show_default=True,
              help="Per stage: warm-up then cosine decay, or one-cycle.")
@click.option("--regularizer", type=click.Choice(["l2sp", "lwf", "bss"]), default=None,
              help="Conservation training: stay close to the source model (l2sp, lwf), or shrink the "
                   "smallest feature singular values (bss).")
@click.option("--regularizer-weight", type=click.FloatRange(0), default=0.01, show_default=True)
@click.option("--patience", type=click.IntRange(1), default=None, help="Early stopping on validation accuracy.")
@click.option("--augment", type=click.Choice(["none", "crop-flip", "randaugment"]), default="crop-flip",
              show_default=True, help="Augmentation for stages that train backbone layers.")
@click.option("--no-augment", is_flag=True, help="Same as --augment none.")
@click.option("--augment-head-stage", is_flag=True,
              help="Augment head-only stages too (by default they train on plain images, so the frozen "
                   "base runs once per stage instead of once per epoch).")
@click.option("--mixup", type=click.FloatRange(0), default=0.0, show_default=True,
              help="MixUp Beta(a, a) on augmented stages' batches (0 = off).")
@click.option("--cutmix", type=click.FloatRange(0), default=0.0, show_default=True,
              help="CutMix Beta(a, a) on augmented stages' batches (0 = off).")
@_transfer_options
@_class_weight_option
@_test_option
@click.option("--final", is_flag=True,
              help="After training, train again on training + validation images for the epochs validation chose "
                   "(the plan cut at the best epoch), and save that model.")
@click.option("--sampler", type=click.Choice(["shuffle", "balanced"]), default="shuffle", show_default=True,
              help="balanced: draw every class equally often (with replacement) in each epoch.")
@click.option("--strict", is_flag=True)
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False), default=None,
              help="Continue this killed or interrupted run with its saved settings (repeating a setting "
                   "with another value is an error; a finished run is not extended).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.pass_context
def finetune(ctx, data, out, overwrite, val_dir, val_split, stages, freeze_first, lr, head, base_lr_factor,
             layer_decay, optimizer, seed, image_size, batch_size, backbone, weights, schedule, regularizer,
             regularizer_weight, patience, augment, no_augment, augment_head_stage, mixup, cutmix, class_weight,
             transfer_layers, transfer_from, freeze_transferred, test_dir, final, sampler, strict, resume_dir,
             quiet):
    """Fine-tune: new head on the frozen base, then unfreeze more with a smaller LR.

    Checkpoints are written every epoch; after a kill or Ctrl-C, run the same command with
    --resume RUN_DIR to continue where it stopped.
    """
    from graft.recipes.finetune import finetune as run_finetune
    from graft.recipes.finetune import is_resumable, resume_finetune

    if not out and not resume_dir:
        raise click.UsageError("Missing option '--out' / '-o' (or --resume RUN_DIR).")
    if no_augment and augment not in ("none", "crop-flip"):
        raise click.UsageError(f"--no-augment contradicts --augment {augment}")
    if resume_dir and overwrite:
        raise click.UsageError("--resume continues a run, --overwrite starts one over: choose one")
    if resume_dir and out and Path(out).resolve() != Path(resume_dir).resolve():
        raise click.UsageError(f"--resume {resume_dir} writes into that run folder; -o {out} names another")
    try:
        if resume_dir:
            given = _given_settings(ctx, _FINETUNE_SETTING_OF)
            if no_augment:
                given["augment"] = "none"
            result = resume_finetune(resume_dir, given=given, strict=strict, progress=not quiet)
        else:
            result = run_finetune(
                data, out, val_dir=val_dir, val_fraction=val_split, backbone=backbone, weights=weights,
                head=head, stages=stages, freeze_first=freeze_first, lr=lr, base_lr_factor=base_lr_factor,
                layer_decay=layer_decay, optimizer=optimizer, schedule=schedule, image_size=image_size,
                batch_size=batch_size, seed=seed, augment="none" if no_augment else augment,
                augment_head_stage=augment_head_stage, mixup=mixup, cutmix=cutmix, regularizer=regularizer,
                regularizer_weight=regularizer_weight, patience=patience, class_weight=class_weight,
                sampler=sampler, test_dir=test_dir, final=final, transfer_layers=transfer_layers,
                transfer_from=transfer_from, freeze_transferred=freeze_transferred, strict=strict, progress=not quiet, overwrite=overwrite)
    except KeyboardInterrupt:
        run_dir = resume_dir or out
        if is_resumable(run_dir):
            click.echo(f"interrupted: every finished epoch is saved; continue with --resume {run_dir}", err=True)
        else:
            click.echo("interrupted before the first epoch finished: nothing to resume; run the same command "
                       "again to start over", err=True)
        raise SystemExit(130)
    if not result.metrics:  # a non-zero rank under torchrun: rank 0 reports
        return
    _print_summary(result.run_dir, result.metrics)
    click.echo(f"history: {result.run_dir / 'history.jsonl'}  curves: {result.run_dir / 'curves.png'}")


# finetune's command-line parameters -> the settings saved in config.yaml (for --resume checks)
_FINETUNE_SETTING_OF = {
    "data": "train_dir", "val_dir": "val_dir", "val_split": "val_fraction", "stages": "stages",
    "freeze_first": "freeze_first", "lr": "lr", "head": "head", "base_lr_factor": "base_lr_factor",
    "layer_decay": "layer_decay", "optimizer": "optimizer", "seed": "seed", "image_size": "image_size",
    "batch_size": "batch_size", "backbone": "backbone", "weights": "weights", "schedule": "schedule",
    "regularizer": "regularizer", "regularizer_weight": "regularizer_weight", "patience": "patience",
    "augment": "augment", "augment_head_stage": "augment_head_stage", "mixup": "mixup", "cutmix": "cutmix",
    "class_weight": "class_weight", "sampler": "sampler", "test_dir": "test_dir", "final": "final",
    "transfer_layers": "transfer_layers", "transfer_from": "transfer_from", "freeze_transferred": "freeze_transferred",
}


def _given_settings(ctx, setting_of: dict) -> dict:
    """The settings the user typed (not defaults), keyed by their saved names."""
    from click.core import ParameterSource

    typed = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    return {setting: ctx.params[param] for param, setting in setting_of.items()
            if ctx.get_parameter_source(param) in typed}


@main.command("lr-find")
@_training_data_options(out_required=True)
@click.option("--stage", default="head", show_default=True,
              help="Which parameters train during the sweep: head, topN or all.")
@_finetune_model_options
@click.option("--augment", type=click.Choice(["none", "crop-flip", "randaugment"]), default="none",
              show_default=True)
@click.option("--start", type=click.FloatRange(0, min_open=True), default=1e-6, show_default=True)
@click.option("--end", type=click.FloatRange(0, min_open=True), default=1.0, show_default=True)
@click.option("--steps", type=click.IntRange(5), default=100, show_default=True)
@click.option("--strict", is_flag=True)
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def lr_find(data, out, overwrite, val_dir, val_split, stage, head, base_lr_factor, layer_decay, optimizer, seed,
            image_size, batch_size, backbone, weights, augment, start, end, steps, strict, quiet):
    """LR range test: loss vs exponentially growing LR on DATA's training split; plots it.

    Writes OUT/lr_find.png and OUT/lr_find.json and prints the suggested head LR (pass it to
    `graft finetune --lr`, or use `--lr auto` there).
    """
    from graft.recipes.finetune import find_lr

    sweep = find_lr(data, out, val_dir=val_dir, val_fraction=val_split, backbone=backbone, weights=weights,
                    head=head, stage=stage, base_lr_factor=base_lr_factor, layer_decay=layer_decay,
                    optimizer=optimizer, weight_decay=1e-4, image_size=image_size, batch_size=batch_size,
                    seed=seed, augment=augment, start=start, end=end, steps=steps, strict=strict,
                    progress=not quiet, overwrite=overwrite)
    stopped = " (loss diverged there)" if sweep.stopped_early else ""
    click.echo(f"swept {sweep.lrs[0]:.2g} .. {sweep.lrs[-1]:.2g} over {len(sweep.lrs)} steps{stopped}")
    click.echo(f"suggested lr {sweep.suggestion:.3g}  (steepest descent; lowest loss at {sweep.min_loss_lr:.3g})")
    click.echo(f"wrote {Path(out) / 'lr_find.png'} {Path(out) / 'lr_find.json'}")


def _print_summary(directory: Path, metrics: dict, scored_on: str = "validation") -> None:
    click.echo((directory / "report.txt").read_text())
    top = "".join(f"  top-{k} {v:.4f}" for k, v in metrics.get("top_k_accuracy", {}).items())
    click.echo(f"{scored_on}: accuracy {metrics['accuracy']:.4f}  macro F1 {metrics['macro_f1']:.4f}{top}  "
               f"n_train {metrics.get('n_train', '-')}  n_val {metrics['n_val']}  "
               f"{metrics['seconds']:.1f} s  skipped {len(metrics['skipped'])}")
    if "test" in metrics:
        test = metrics["test"]
        top = "".join(f"  top-{k} {v:.4f}" for k, v in test.get("top_k_accuracy", {}).items())
        click.echo(f"test (scored once, model chosen on validation): accuracy {test['accuracy']:.4f}  "
                   f"macro F1 {test['macro_f1']:.4f}{top}  n_test {test['n_test']}  (reports in {directory / 'test'})")
    if metrics.get("final_refit"):
        click.echo("the saved model was refitted on training + validation images (--final); the validation "
                   "scores above are those of the model fitted without them")
    written = [name for name in ("metrics.json", "report.txt", "confusion_matrix.png", "predictions.csv",
                                 "report.html", "config.yaml", "model/") if (directory / name).exists()]
    click.echo(f"wrote {directory}/: {' '.join(written)}")


def _expand_inputs(inputs) -> list[Path]:
    from graft.data.folders import is_hidden

    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            paths.extend(sorted(p for p in path.rglob("*") if p.is_file()
                                and not any(is_hidden(part) for part in p.relative_to(path).parts)))
        else:
            paths.append(path)  # a missing file is reported by the extractor, not dropped here
    if not paths:
        raise GraftError("no image files found in " + ", ".join(map(str, inputs)))
    return paths


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--top-k", "-k", type=click.IntRange(1), default=3, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per image.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV: path,rank,class,probability.")
@click.option("--tta", type=click.Choice(["none", "flip"]), default="none", show_default=True,
              help="Test-time augmentation: flip averages each image's and its mirror's probabilities.")
@_common_data_options
def predict(run_dir, inputs, top_k, as_json, as_csv, tta, strict, engine, batch_size, no_cache, quiet):
    """Top-k classes with probabilities for images (files or folders)."""
    import numpy as np

    if as_json and as_csv:
        raise click.UsageError("--json and --csv are two output formats: choose one")

    from graft.artifacts.model import GraftModel

    model = GraftModel.load(run_dir)
    features, probabilities = model.predict_paths(_expand_inputs(inputs), strict=strict, engine=engine,
                                                  batch_size=batch_size, cache=not no_cache,
                                                  progress=not quiet, tta=tta)
    # a multi-task model: each task's top-k among its own classes (probabilities sum to 1 per task)
    parts = getattr(model.head, "slices", None) or {None: slice(0, len(model.classes))}
    writer = csv.writer(sys.stdout) if as_csv else None
    if writer:
        writer.writerow(["path", *(["task"] if len(parts) > 1 else []), "rank", "class", "probability"])
    for path, probs in zip(features.paths, probabilities):
        tops = {}
        for task, part in parts.items():
            names, scores = model.classes[part], probs[part]
            order = np.argsort(-scores)[:min(top_k, len(names))]
            tops[task] = [(names[j].split("/", 1)[1] if task else names[j], float(scores[j])) for j in order]
        if as_json:
            listed = {task: [{"class": c, "probability": round(p, 6)} for c, p in top] for task, top in tops.items()}
            click.echo(json.dumps({"path": path, "top": listed[None]} if None in listed
                                  else {"path": path, "tasks": listed}))
        elif writer:
            for task, top in tops.items():
                for rank, (c, p) in enumerate(top, 1):
                    writer.writerow([path, *([task] if task else []), rank, c, f"{p:.6f}"])
        else:
            click.echo(f"{path}\t" + "  |  ".join((f"{task}: " if task else "") + "  ".join(
                f"{c} {p:.3f}" for c, p in top) for task, top in tops.items()))
    for item in features.skipped:
        if as_json:
            click.echo(json.dumps({"path": item["path"], "error": item["reason"]}))


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("data", type=click.Path())
@_common_data_options
def evaluate(run_dir, data, strict, engine, batch_size, no_cache, quiet):
    """Score a saved model on a labelled class-folder tree; reports land in RUN_DIR/eval/<DATA>/."""
    from graft.recipes.frozen import evaluate as run_evaluation

    directory, metrics = run_evaluation(run_dir, data, strict=strict, engine=engine, batch_size=batch_size,
                                        cache=not no_cache, progress=not quiet)
    _print_summary(directory, metrics, scored_on=f"evaluated on {data}")


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--format", "fmt", type=click.Choice(["onnx"]), default="onnx", show_default=True)
@click.option("--out", "-o", type=click.Path(dir_okay=False), default=None,
              help="Output file (default RUN_DIR/model.onnx); never inside RUN_DIR/model/, and an existing "
                   "file is replaced only if it is an earlier graft export.")
@click.option("--input", "input_type", type=click.Choice(["float", "uint8"]), default="float", show_default=True,
              help="float: normalised float32 (N,3,S,S); uint8: cropped RGB pixels (N,S,S,3), normalised inside.")
def export(run_dir, fmt, out, input_type):
    """Export a model to ONNX (outputs: logits, probabilities) and check it against torch.

    Class names, preprocessing and the full input recipe travel in the ONNX metadata.
    """
    from graft.artifacts.export import export_and_verify

    path, max_diff = export_and_verify(run_dir, out, input_type=input_type)
    click.echo(f"wrote {path} (ONNX Runtime vs torch: max |diff| {max_diff:.2e})")


@main.command()
@click.option("--data", type=click.Path(), default=None,
              help="Run on this class-folder tree instead of the embedded digits.")
@click.option("--out", "-o", type=click.Path(file_okay=False), default="runs/demo", show_default=True)
@click.option("--backbone", "-b", default=DEFAULT_BACKBONE, show_default=True)
@click.option("--image-size", type=click.IntRange(32), default=None)
@click.option("--quiet", "-q", is_flag=True)
def demo(data, out, backbone, image_size, quiet):
    """The whole path on real data: features, logistic regression, report, pictures."""
    from graft.features.cache import cache_root
    from graft.recipes.demo import write_digits_dataset
    from graft.recipes.frozen import fit_frozen

    if data is None:
        data = write_digits_dataset(cache_root() / "demo" / "sklearn-digits")
        image_size = image_size or 128
        click.echo(f"demo data: scikit-learn's 1797 handwritten digits, written to {data}")
    result = fit_frozen(data, out, val_fraction=0.25, backbone=backbone, image_size=image_size,
                        progress=not quiet)
    _print_summary(result.run_dir, result.metrics)
    click.echo(f"confusion matrix picture: {result.run_dir / 'confusion_matrix.png'}")
    click.echo(f"try: graft predict {result.run_dir} {Path(data) / sorted(p.name for p in Path(data).iterdir())[0]}")


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--eval", "eval_name", default=None, help="The report of RUN_DIR/eval/NAME instead of the run's own.")
def report(run_dir, eval_name):
    """(Re)write RUN_DIR/report.html: one self-contained page to open in a browser."""
    from graft.errors import GraftError
    from graft.reporting.html import write_html_report

    subdir = f"eval/{eval_name}" if eval_name else None
    target = Path(run_dir) / (subdir or "")
    if not (target / "metrics.json").is_file():
        raise GraftError(f"{target} holds no metrics.json: not a finished graft run or evaluation")
    click.echo(f"wrote {write_html_report(run_dir, subdir)}")


def _advice_options(fn):
    fn = click.option("--layers", default=None,
                      help="Inner layers of the first backbone to rank too, comma-separated (default blocks.5,blocks.4).")(fn)
    fn = click.option("--backbones", default=None,
                      help="Backbones to rank, comma-separated (default tf_efficientnet_lite0,tf_efficientnet_lite2).")(fn)
    fn = click.option("--val-split", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None)(fn)
    fn = click.option("--val", "val_dir", type=click.Path(), default=None)(fn)
    fn = click.option("--quiet", "-q", is_flag=True, help="No progress bars.")(fn)
    return click.argument("data", type=click.Path())(fn)


def _split_list(value):
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


@main.command()
@_advice_options
@click.option("--json", "as_json", is_flag=True, help="The advice as one JSON object (schema in graft.recipes.advise.Advice).")
def advise(data, val_dir, val_split, backbones, layers, quiet, as_json):
    """Measure DATA (size, similarity to ImageNet, LogME of candidate backbones and layers) and
    say which strategy, backbone, layer, input size and head to use, with the command to run."""
    from graft.recipes.advise import advise as measure

    if val_dir and val_split:
        raise click.UsageError("--val and --val-split: choose one")
    advice = measure(data, val_dir=val_dir, val_fraction=val_split, backbones=_split_list(backbones),
                     layers=_split_list(layers), progress=not quiet and not as_json)
    click.echo(json.dumps(advice.to_dict(), indent=2) if as_json else advice.text())


@main.command()
@_advice_options
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False))
@click.option("--overwrite", is_flag=True)
def auto(data, val_dir, val_split, backbones, layers, quiet, out, overwrite):
    """Advise, then run the recommendation into OUT (the advice is kept as OUT/advice.json)."""
    from graft.recipes.advise import advise as measure
    from graft.recipes.advise import run_advice

    if val_dir and val_split:
        raise click.UsageError("--val and --val-split: choose one")
    advice = measure(data, val_dir=val_dir, val_fraction=val_split, backbones=_split_list(backbones),
                     layers=_split_list(layers), progress=not quiet, out=out)
    click.echo(advice.text())
    click.echo(f"running it now: about {advice.estimated_seconds:.0f} s expected")
    result = run_advice(advice, out, val_dir=val_dir, val_fraction=val_split, progress=not quiet,
                        overwrite=overwrite)
    if result.metrics:
        _print_summary(result.run_dir, result.metrics)


@main.command()
@click.argument("data", type=click.Path())
@click.option("--ways", type=int, default=5, show_default=True, help="Classes per episode.")
@click.option("--shots", default="1,5", show_default=True, help="Labelled images per class, comma-separated.")
@click.option("--episodes", type=click.IntRange(1), default=200, show_default=True)
@click.option("--queries", type=int, default=15, show_default=True, help="Query images per class and episode.")
@click.option("--heads", default="prototype,logreg", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per (shots, head).")
@_backbone_options
@click.option("--quiet", "-q", is_flag=True)
def fewshot(data, ways, shots, episodes, queries, heads, seed, as_json, backbone, weights, layer, image_size, quiet):
    """N-way K-shot episodes on frozen features: mean accuracy with a 95 % interval."""
    from graft.recipes.fewshot import fewshot as run_fewshot

    try:
        shot_list = [int(k) for k in shots.split(",") if k.strip()]
    except ValueError:
        raise click.BadParameter(f"{shots!r}: write numbers separated by commas, e.g. 1,5,10",
                                 param_hint="--shots") from None
    results = run_fewshot(data, ways=ways, shots=shot_list, episodes=episodes, queries=queries,
                          heads=_split_list(heads), backbone=backbone, layer=layer, weights=weights,
                          image_size=image_size, seed=seed, progress=not quiet)
    for r in results:
        if as_json:
            click.echo(json.dumps(r.to_dict()))
        else:
            click.echo(f"{r.ways}-way {r.shots}-shot {r.head:9s} {100 * r.mean:5.1f} % +- {100 * r.interval:.1f} "
                       f"({r.episodes} episodes, {r.queries} queries per class)")


@main.command()
@_training_data_options()
@click.option("--arch", required=True, help="Any timm architecture (e.g. resnet10t, tf_efficientnet_lite0).")
@click.option("--stages", default="all:10", show_default=True, help="Stage plan; from random weights, train all.")
@click.option("--lr", type=_LearningRate(), default=2e-3, show_default=True)
@click.option("--image-size", type=click.IntRange(32), default=None)
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@click.option("--augment", type=click.Choice(["none", "crop-flip", "randaugment"]), default="none",
              show_default=True, help="none suits digits and text (a mirrored 2 is no 2).")
@click.option("--seed", type=int, default=0, show_default=True)
@_transfer_options
@click.option("--strict", is_flag=True)
@click.option("--quiet", "-q", is_flag=True)
def pretrain(data, out, overwrite, val_dir, val_split, arch, stages, lr, image_size, batch_size, augment, seed,
             transfer_layers, transfer_from, freeze_transferred, strict, quiet):
    """Train a network from random initialisation on a labelled source folder; the run folder is
    then a backbone for every other command (--backbone RUN_DIR). Resume with
    `graft finetune DATA --resume RUN_DIR`."""
    from graft.recipes.finetune import finetune as run_training

    result = run_training(data, out, val_dir=val_dir, val_fraction=val_split, backbone=arch, head="linear",
                          stages=stages, lr=lr, base_lr_factor=1.0, image_size=image_size, batch_size=batch_size,
                          seed=seed, augment=augment, pretrained=False, transfer_layers=transfer_layers,
                          transfer_from=transfer_from, freeze_transferred=freeze_transferred, command="pretrain",
                          strict=strict, progress=not quiet, overwrite=overwrite)
    if result.metrics:
        _print_summary(result.run_dir, result.metrics)


@main.command()
@click.option("--source", "source_dir", type=click.Path(), default=None, help="Labelled source class-folder tree.")
@click.option("--target", "target_dir", type=click.Path(), default=None,
              help="Unlabelled target images (any layout; class folders are allowed and their names ignored).")
@click.option("--target-val", "target_val_dir", type=click.Path(), default=None,
              help="Labelled target images, scored each epoch and at the end (RUN/target/); never trained on.")
@click.option("--out", "-o", type=click.Path(file_okay=False), default=None, help="Run folder to write.")
@click.option("--overwrite", is_flag=True, help="Write into a non-empty -o folder (graft's outputs there are removed).")
@click.option("--val", "val_dir", type=click.Path(), default=None, help="Labelled source validation tree.")
@click.option("--val-split", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              help="Hold out this fraction of the source (default 0.2 without --val).")
@click.option("--adversary", type=click.Choice(["dann", "cdan", "none"]), default="dann", show_default=True,
              help="none: source-only, the same run without the adversary and without the target.")
@click.option("--adversary-weight", type=click.FloatRange(0), default=1.0, show_default=True,
              help="Largest gradient-reversal weight (ramped up from 0 over training).")
@click.option("--backbone", "-b", default=DEFAULT_BACKBONE, show_default=True)
@click.option("--weights", type=click.Path(dir_okay=False), default=None)
@click.option("--from-scratch", is_flag=True, help="Random initial weights instead of pretrained ones.")
@click.option("--image-size", type=click.IntRange(32), default=None)
@click.option("--head", default="linear", show_default=True, help="linear, or mlp:HIDDEN.")
@click.option("--stages", default="all:10", show_default=True, help="Stage plan NAME:EPOCHS,...")
@click.option("--lr", type=_LearningRate(), default=1e-3, show_default=True)
@click.option("--base-lr-factor", type=click.FloatRange(0, min_open=True), default=1.0, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@click.option("--augment", type=click.Choice(["none", "crop-flip", "randaugment"]), default="none",
              show_default=True, help="none suits digits and text (a mirrored 2 is no 2).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--strict", is_flag=True)
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False), default=None,
              help="Continue this killed or interrupted adaptation run with its saved settings.")
@click.option("--quiet", "-q", is_flag=True)
def adapt(source_dir, target_dir, target_val_dir, out, overwrite, val_dir, val_split, adversary, adversary_weight,
          backbone, weights, from_scratch, image_size, head, stages, lr, base_lr_factor, batch_size, augment, seed,
          strict, resume_dir, quiet):
    """Domain adaptation: learn from a labelled --source folder and unlabelled --target images
    (DANN by default; --adversary none is source-only: the target never enters the network)."""
    from graft.recipes.adapt import adapt as run_adapt
    from graft.recipes.finetune import resume_finetune

    if resume_dir:
        result = resume_finetune(resume_dir, given={}, strict=strict, progress=not quiet)
    else:
        missing = [flag for flag, value in (("--source", source_dir), ("--target", target_dir), ("--out", out))
                   if not value]
        if missing:
            raise click.UsageError(f"missing {', '.join(missing)} (or --resume RUN_DIR)")
        result = run_adapt(source_dir, target_dir, out, target_val_dir=target_val_dir, adversary=adversary,
                           adversary_weight=adversary_weight, stages=stages, lr=lr, base_lr_factor=base_lr_factor,
                           val_dir=val_dir, val_fraction=val_split, backbone=backbone, weights=weights,
                           pretrained=not from_scratch, image_size=image_size, head=head, batch_size=batch_size,
                           augment=augment, seed=seed, strict=strict, progress=not quiet, overwrite=overwrite)
    if not result.metrics:
        return
    _print_summary(result.run_dir, result.metrics, scored_on="source validation")
    target = result.metrics.get("target")
    if target:
        click.echo(f"target ({target['data_dir']}): accuracy {100 * target['accuracy']:.1f} %  "
                   f"macro F1 {target['macro_f1']:.3f}")
    for key in ("proxy_a_distance_before", "proxy_a_distance_after"):
        if key in result.metrics:
            click.echo(f"{key.replace('_', ' ')}: {result.metrics[key]:.3f}")


@main.command()
@click.argument("data", type=click.Path())
@click.option("--teacher", required=True, type=click.Path(file_okay=False), help="A graft run folder or model.")
@click.option("--student", required=True, help="The student's backbone (a smaller network).")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False))
@click.option("--overwrite", is_flag=True, help="Write into a non-empty -o folder (graft's outputs there are removed).")
@click.option("--val", "val_dir", type=click.Path(), default=None)
@click.option("--val-split", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None)
@click.option("--temperature", type=click.FloatRange(0, min_open=True), default=4.0, show_default=True)
@click.option("--alpha", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Weight of the teacher's soft targets; 1 - alpha on the labels (0 = no teacher).")
@click.option("--image-size", type=click.IntRange(32), default=None)
@click.option("--head", default="linear", show_default=True)
@click.option("--stages", default="head:5,top2:5", show_default=True)
@click.option("--lr", type=_LearningRate(), default=1e-3, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option("--augment", type=click.Choice(["none", "crop-flip", "randaugment"]), default="crop-flip",
              show_default=True, help="For stages that train backbone layers; the teacher sees the same crops.")
@click.option("--mixup", type=click.FloatRange(0), default=0.0, show_default=True,
              help="MixUp alpha on augmented stages; the teacher labels the mixed images.")
@click.option("--cutmix", type=click.FloatRange(0), default=0.0, show_default=True,
              help="CutMix alpha on augmented stages; the teacher labels the mixed images.")
@click.option("--seed", type=int, default=0, show_default=True)
@_test_option
@click.option("--strict", is_flag=True)
@click.option("--quiet", "-q", is_flag=True)
def distill(data, teacher, student, out, overwrite, val_dir, val_split, temperature, alpha, image_size, head, stages,
            lr, batch_size, augment, mixup, cutmix, seed, test_dir, strict, quiet):
    """Teacher-student: train --student on DATA from a graft run's softened outputs and the labels."""
    from graft.recipes.distill import distill as run_distill

    result = run_distill(teacher, data, out, student=student, temperature=temperature, alpha=alpha,
                         image_size=image_size, head=head, stages=stages, lr=lr, batch_size=batch_size, seed=seed,
                         augment=augment, mixup=mixup, cutmix=cutmix,
                         val_dir=val_dir, val_fraction=val_split, test_dir=test_dir, strict=strict,
                         progress=not quiet, overwrite=overwrite)
    if result.metrics:
        _print_summary(result.run_dir, result.metrics)



@main.command()
@click.argument("tasks", nargs=-1)
@click.option("--out", "-o", type=click.Path(file_okay=False), default=None, help="Run folder to write.")
@click.option("--overwrite", is_flag=True, help="Write into a non-empty -o folder (graft's outputs there are removed).")
@click.option("--val", "val_specs", multiple=True, help="TASK=DIR: that task's validation tree (repeatable).")
@click.option("--val-split", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              help="Hold out this fraction of each task without --val (default 0.2).")
@click.option("--weighting", type=click.Choice(["fixed", "uncertainty"]), default="fixed", show_default=True,
              help="Sum of task losses with fixed weights, or learned uncertainty weights (Kendall et al. 2018).")
@click.option("--task-weight", "weight_specs", multiple=True, help="TASK=W: fixed loss weight (default 1).")
@click.option("--backbone", "-b", default=DEFAULT_BACKBONE, show_default=True)
@click.option("--weights", type=click.Path(dir_okay=False), default=None)
@click.option("--image-size", type=click.IntRange(32), default=None)
@click.option("--head", default="linear", show_default=True, help="Each task's head: linear, or mlp:HIDDEN.")
@click.option("--stages", default="head:5,top2:5", show_default=True)
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=1e-3, show_default=True)
@click.option("--base-lr-factor", type=click.FloatRange(0, min_open=True), default=0.1, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True,
              help="Images per task in each step.")
@click.option("--augment", type=click.Choice(["none", "crop-flip", "randaugment"]), default="crop-flip",
              show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--strict", is_flag=True)
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False), default=None,
              help="Continue this killed or interrupted multi-task run.")
@click.option("--quiet", "-q", is_flag=True)
def multitask(tasks, out, overwrite, val_specs, val_split, weighting, weight_specs, backbone, weights, image_size,
              head, stages, lr, base_lr_factor, batch_size, augment, seed, strict, resume_dir, quiet):
    """One shared network, one head per task: graft multitask flowers=DIR insects=DIR -o RUN."""
    from graft.recipes.multitask import multitask as run_multitask
    from graft.recipes.multitask import parse_tasks, resume_multitask

    if resume_dir:
        result = resume_multitask(resume_dir, strict=strict, progress=not quiet)
    else:
        if not out:
            raise click.UsageError("Missing option '--out' / '-o' (or --resume RUN_DIR).")
        task_weights = {}
        for name, value in parse_tasks(weight_specs, "--task-weight").items():
            try:
                task_weights[name] = float(value)
            except ValueError:
                raise click.UsageError(f"--task-weight {name}={value}: not a number") from None
        result = run_multitask(parse_tasks(tasks), out, val_dirs=parse_tasks(val_specs, "--val"),
                               val_fraction=val_split, backbone=backbone, weights=weights, head=head, stages=stages,
                               lr=lr, base_lr_factor=base_lr_factor, image_size=image_size, batch_size=batch_size,
                               seed=seed, augment=augment, weighting=weighting, task_weights=task_weights,
                               strict=strict, progress=not quiet, overwrite=overwrite)
    for task, metrics in result.metrics["tasks"].items():
        click.echo(f"{task}: accuracy {metrics['accuracy']:.4f}  macro F1 {metrics['macro_f1']:.4f}  "
                   f"n_train {metrics['n_train']}  n_val {metrics['n_val']}  (reports in {result.run_dir / task})")
    click.echo(f"mean accuracy {result.metrics['accuracy']:.4f}  {result.metrics['seconds']:.1f} s  "
               f"skipped {len(result.metrics['skipped'])}  model: {result.run_dir / 'model'}")
