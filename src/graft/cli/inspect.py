"""Commands that look at backbones and data before training: backbones, layers, extract,
advise, auto, fewshot."""
from __future__ import annotations

import json

import click

from graft.cli.options import as_json, config_from, config_options, data_options, echo_summary, on_ray, quiet
from graft.defaults import DEFAULT_BACKBONE
from graft.recipes.settings import AdviseConfig, FewshotConfig, FrozenFitConfig


@click.command()
def backbones():
    """List the registered backbones and where their weights come from."""
    from graft.backbones import list_backbones

    click.echo("\n".join(f"{e.name:28s} {e.source:44s} {e.description}" for e in list_backbones())
               + "\n\nAny timm architecture also works with --weights FILE (or online, from timm's hub).")


@click.command()
@click.argument("backbone", default=DEFAULT_BACKBONE)
@config_options(FrozenFitConfig, only=("weights", "image_size"))
@click.option("--transfer-layers", default=None, help="Mark the layers this first:K / last:K / NAME,... spec copies.")
@as_json
def layers(backbone, weights, image_size, transfer_layers, as_json):
    """List a backbone's layers: index, name, type, output shape, parameters, trainable.
    BACKBONE is a registered name, a timm architecture (with --weights) or a graft run folder."""
    from graft.backbones import create_backbone
    from graft.backbones.transfer import resolve_transfer
    from graft.reporting.tables import layers_table

    source = create_backbone(backbone, weights=weights)
    infos = source.layers(image_size)
    copied = set(resolve_transfer(transfer_layers, source.model)) if transfer_layers else set()
    for line in ([json.dumps({**i.__dict__, **({"transferred": i.name in copied} if copied else {})}) for i in infos]
                 if as_json else layers_table(infos, copied)):
        click.echo(line)


@click.command()
@click.argument("data", type=click.Path())
@click.option("--out", "-o", required=True, type=click.Path(), help="Output .npz (features, labels, paths, classes).")
@config_options(FrozenFitConfig, only=("backbone", "weights", "layer", "image_size"))
@data_options
@on_ray
def extract(data, out, strict, quiet, ray, **params):
    """Write frozen backbone features of DATA to an .npz file: class folders with their labels, or
    unlabelled images (a flat or nested folder); the last line says which it read."""
    from graft.recipes.frozen import extract as write_features

    features, path = write_features(config_from(FrozenFitConfig, params, train_dir=data), out, strict=strict,
                                    progress=not quiet, ray=ray)
    click.echo(f"wrote {path}: {features.summary()}")


@click.command()
@config_options(AdviseConfig)
@quiet
@as_json
def advise(quiet, as_json, **params):
    """Measure DATA (size, similarity to ImageNet, LogME of candidate backbones and layers) and
    say which strategy, backbone, layer, input size and head to use, with the command to run."""
    from graft.recipes.advise import advise as measure

    advice = measure(config_from(AdviseConfig, params), progress=not quiet and not as_json)
    click.echo(json.dumps(advice.to_dict(), indent=2) if as_json else advice.text())


@click.command()
@config_options(AdviseConfig)
@quiet
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Run folder to write.")
@click.option("--overwrite", is_flag=True, help="Write into a non-empty -o folder (graft's outputs are removed).")
def auto(quiet, out, overwrite, **params):
    """Advise, score the best candidates and graft fit's defaults on validation, keep the best in OUT
    (OUT/advice.json records every score)."""
    from graft.artifacts.run_folder import check_run_folder
    from graft.recipes.auto import auto as run_auto

    check_run_folder(out, ("fit", "finetune"), overwrite=overwrite)  # before minutes of analysis
    result = run_auto(config_from(AdviseConfig, params), out, progress=not quiet, overwrite=overwrite, say=click.echo)
    echo_summary(result.run_dir, result.metrics)


@click.command()
@config_options(FewshotConfig)
@as_json
@quiet
def fewshot(as_json, quiet, **params):
    """N-way K-shot episodes on frozen features: mean accuracy with a 95 % interval."""
    from graft.recipes.fewshot import fewshot as run_fewshot

    for r in run_fewshot(config_from(FewshotConfig, params), progress=not quiet):
        click.echo(json.dumps(r.to_dict()) if as_json else r.text())


COMMANDS = (backbones, layers, extract, advise, auto, fewshot)
