"""Commands that look at backbones and data before training: backbones, layers, extract,
advise, auto, fewshot."""
from __future__ import annotations

import json

import click

from graft.cli.output import print_summary
from graft.cli.options import config_from, config_options
from graft.defaults import DEFAULT_BACKBONE
from graft.recipes.settings import AdviseConfig, FewshotConfig


def _layer_name(ctx, param, value):
    if value is not None and not value.strip():
        raise click.BadParameter("must name a layer (or an index) from `graft layers`; leave it out for the "
                                 "final pooled features")
    return value


def _backbone_options(fn):
    fn = click.option("--image-size", type=click.IntRange(32), default=None,
                      help="Input resolution (default: the weights' own).")(fn)
    fn = click.option("--layer", default=None, callback=_layer_name,
                      help="Cut layer: name or index from `graft layers` (default: final pooled).")(fn)
    fn = click.option("--weights", type=click.Path(dir_okay=False), default=None,
                      help="Local .safetensors/.pth weights for a timm architecture.")(fn)
    fn = click.option("--backbone", "-b", default=DEFAULT_BACKBONE, show_default=True)(fn)
    return fn


def common_data_options(fn):
    fn = click.option("--strict", is_flag=True, help="Stop at the first unreadable image instead of skipping it.")(fn)
    fn = click.option("--engine", type=click.Choice(["auto", "onnx", "torch"]), default="auto", show_default=True,
                      help="Frozen inference engine (auto: ONNX Runtime when installed).")(fn)
    fn = click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)(fn)
    fn = click.option("--no-cache", is_flag=True, help="Do not read or write the feature cache.")(fn)
    fn = click.option("--quiet", "-q", is_flag=True, help="No progress bars.")(fn)
    return fn


@click.command()
def backbones():
    """List the registered backbones and where their weights come from."""
    from graft.backbones import list_backbones

    for entry in list_backbones():
        click.echo(f"{entry.name:28s} {entry.source:44s} {entry.description}")
    click.echo("\nAny timm architecture also works with --weights FILE (or online, from timm's hub).")


@click.command()
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


@click.command()
@click.argument("data", type=click.Path())
@click.option("--out", "-o", required=True, type=click.Path(), help="Output .npz (features, labels, paths, classes).")
@_backbone_options
@common_data_options
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


@click.command()
@config_options(AdviseConfig)
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.option("--json", "as_json", is_flag=True, help="The advice as one JSON object (schema in graft.recipes.advise.Advice).")
def advise(quiet, as_json, **params):
    """Measure DATA (size, similarity to ImageNet, LogME of candidate backbones and layers) and
    say which strategy, backbone, layer, input size and head to use, with the command to run."""
    from graft.recipes.advise import advise as measure

    advice = measure(config_from(AdviseConfig, params), progress=not quiet and not as_json)
    click.echo(json.dumps(advice.to_dict(), indent=2) if as_json else advice.text())


@click.command()
@config_options(AdviseConfig)
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False))
@click.option("--overwrite", is_flag=True)
def auto(quiet, out, overwrite, **params):
    """Advise, then run the recommendation into OUT (the advice is kept as OUT/advice.json)."""
    from graft.recipes.advise import advise as measure
    from graft.recipes.advise import run_advice

    config = config_from(AdviseConfig, params)
    advice = measure(config, progress=not quiet, out=out)
    click.echo(advice.text())
    click.echo(f"running it now: about {advice.estimated_seconds:.0f} s expected")
    result = run_advice(advice, out, val_dir=config.val_dir, val_fraction=config.val_fraction, progress=not quiet,
                        overwrite=overwrite)
    if result.metrics:
        print_summary(result.run_dir, result.metrics)


@click.command()
@config_options(FewshotConfig)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per (shots, head).")
@click.option("--quiet", "-q", is_flag=True)
def fewshot(as_json, quiet, **params):
    """N-way K-shot episodes on frozen features: mean accuracy with a 95 % interval."""
    from graft.recipes.fewshot import fewshot as run_fewshot

    for r in run_fewshot(config_from(FewshotConfig, params), progress=not quiet):
        if as_json:
            click.echo(json.dumps(r.to_dict()))
        else:
            click.echo(f"{r.ways}-way {r.shots}-shot {r.head:9s} {100 * r.mean:5.1f} % +- {100 * r.interval:.1f} "
                       f"({r.episodes} episodes, {r.queries} queries per class)")


COMMANDS = (backbones, layers, extract, advise, auto, fewshot)
