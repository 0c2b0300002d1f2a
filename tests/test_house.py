"""The shape of the house: one Config per recipe is the only place a default lives, the CLI is
generated from it, modules stay small, tests use public names."""
import ast
import dataclasses
from pathlib import Path

import click
import pytest

from graft.cli import main
from graft.recipes import settings

SRC = Path(__file__).resolve().parents[1] / "src" / "graft"
TESTS = Path(__file__).resolve().parent

# command -> its Config; every option the command shows for a field must default to the field's default
COMMANDS = {"fit": settings.FrozenFitConfig, "finetune": settings.FinetuneConfig,
            "pretrain": settings.PretrainConfig, "adapt": settings.AdaptConfig,
            "distill": settings.DistillConfig, "multitask": settings.MultitaskConfig,
            "lr-find": settings.LRFindConfig, "fewshot": settings.FewshotConfig,
            "advise": settings.AdviseConfig, "auto": settings.AdviseConfig}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_cli_defaults_are_the_configs_defaults(name):
    command = main.get_command(click.Context(main), name)
    config = COMMANDS[name]
    by_name = {f.name: f for f in dataclasses.fields(config)}
    shown = [p for p in command.params if p.name in by_name]
    assert len(shown) >= 5, f"{name} shows only {[p.name for p in shown]}"
    for param in shown:
        f = by_name[param.name]
        if isinstance(param, click.Argument) or f.default is dataclasses.MISSING:
            continue
        default = param.default if not (isinstance(param, click.Option) and param.is_flag) else bool(param.default)
        assert default == f.default, f"graft {name} --{param.name}: CLI {default!r}, {config.__name__} {f.default!r}"


def test_adapt_defaults_are_one_value_for_cli_and_library():
    """They drifted once: the CLI used batch 64 and no augmentation, the library 32 and crop-flip."""
    command = main.get_command(click.Context(main), "adapt")
    params = {p.name: p.default for p in command.params}
    config = settings.AdaptConfig(train_dir="source", target_dir="target")
    assert (params["batch_size"], params["augment"]) == (config.batch_size, config.augment)


def test_a_bad_setting_is_one_clear_error_before_anything_runs(tmp_path):
    from graft.errors import GraftError

    with pytest.raises(GraftError, match="--lr must be in"):
        settings.FinetuneConfig(train_dir=str(tmp_path), lr=-1.0)
    with pytest.raises(GraftError, match="--transfer-layers"):
        settings.FinetuneConfig(train_dir=str(tmp_path), transfer_from="tf_efficientnet_lite0")
    with pytest.raises(GraftError, match="--head"):
        settings.FinetuneConfig(train_dir=str(tmp_path), head="mlp:zero")


def test_modules_are_small_and_the_cli_is_thin():
    sizes = {path.relative_to(SRC): len(path.read_text().splitlines()) for path in SRC.rglob("*.py")}
    assert not {p: n for p, n in sizes.items() if n > 400}
    assert sum(n for p, n in sizes.items() if p.parts[0] == "cli") < 450


def test_tests_import_no_private_names():
    found = []
    for path in TESTS.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("graft"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                private += [part for part in node.module.split(".") if part.startswith("_")]
                found += [f"{path.name}: {node.module} {name}" for name in private]
    assert not found
