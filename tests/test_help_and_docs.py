"""What a user reads: every command in the README with an example, every option with help
text, help that names the command's own flags; --lr auto answered alike; the imbalance
warning gone once --class-weight balanced answers it."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import click
from click.testing import CliRunner

from graft.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def _cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


def test_readme_has_an_example_of_every_command_and_transfer_flags():
    text = README.read_text()
    examples = "\n".join(re.findall(r"```bash\n(.*?)```", text, re.S))
    missing = [name for name in main.commands if not re.search(rf"^\s*(torchrun .*-m )?graft {name}\b", examples,
                                                                 re.M)]
    assert not missing, f"commands without a README example: {missing}"
    assert "--transfer-layers" in examples and "--transfer-from" in examples and "distill --resume" in text


def test_every_option_has_help_and_names_its_own_flags():
    ctx = click.Context(main)
    bare = [f"{name} {p.opts[0]}" for name in main.commands for p in main.get_command(ctx, name).params
            if isinstance(p, click.Option) and not p.hidden and not p.help]
    assert not bare, f"options without help: {bare}"
    code, output = _cli("pretrain", "--help")
    assert code == 0 and "default: --backbone" not in output and "--arch" in output


def test_multitask_lr_auto_is_one_clear_refusal(digits_dir, tmp_path):
    code, output = _cli("multitask", f"a={digits_dir}", f"b={digits_dir}", "--lr", "auto", "-o", tmp_path / "r")
    assert code == 2 and "lr-find" in output and not (tmp_path / "r").exists(), output


def test_the_imbalance_warning_is_not_repeated_once_balanced(digits_dir, tmp_path):
    data = tmp_path / "skewed"
    for name, keep in (("0", 12), ("1", 2), ("2", 12)):  # '1' has six times fewer images
        (data / name).mkdir(parents=True)
        for image in sorted((digits_dir / name).iterdir())[:keep]:
            shutil.copy2(image, data / name / image.name)
    common = ["fit", data, "--val-split", "0.5", "--image-size", "64", "-q"]
    code, output = _cli(*common, "-o", tmp_path / "plain")
    assert code == 0 and output.count("class imbalance") == 1, output
    code, output = _cli(*common, "--class-weight", "balanced", "-o", tmp_path / "balanced")
    assert code == 0 and "class imbalance" not in output, output
