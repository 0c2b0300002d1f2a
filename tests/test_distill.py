"""Teacher-student distillation: the loss, a student that moves toward its teacher, bad input."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from graft.cli import main
from graft.methods.distillation import distillation_loss


def test_loss_is_t_squared_times_the_kl_of_the_softened_distributions():
    torch.manual_seed(0)
    student, teacher, T = torch.randn(6, 5), torch.randn(6, 5) * 3, 4.0
    p, q = torch.softmax(teacher / T, 1), torch.softmax(student / T, 1)
    kl = (p * (p.log() - q.log())).sum(1).mean()
    torch.testing.assert_close(distillation_loss(student, teacher, T), T * T * kl)
    assert distillation_loss(teacher, teacher, T).abs() < 1e-6


@pytest.fixture(scope="module")
def teacher_run(digits_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("teacher") / "run"
    result = CliRunner().invoke(main, ["fit", str(digits_dir), "--val-split", "0.25", "-o", str(run), "-q"])
    assert result.exit_code == 0, result.output
    return run


def test_student_on_soft_targets_only_moves_toward_the_teacher(digits_dir, teacher_run, tmp_path):
    run = tmp_path / "student"
    result = CliRunner().invoke(main, ["distill", str(digits_dir), "--teacher", str(teacher_run), "--student",
                                       "tf_efficientnet_lite0", "--image-size", "64", "--alpha", "1",
                                       "--stages", "head:6", "--lr", "3e-3", "--val-split", "0.25",
                                       "-o", str(run), "-q"])
    assert result.exit_code == 0, result.output
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert all(row["method"] == "distill" for row in history)
    assert history[-1]["soft_loss"] < 0.5 * history[0]["soft_loss"]
    assert history[-1]["teacher_agreement"] > history[0]["teacher_agreement"]
    config = json.loads((run / "model" / "graft.json").read_text())
    assert config["classes"] == [str(d) for d in range(10)]


def test_teacher_with_other_classes_is_refused(digits_dir, teacher_run, tmp_path):
    other = tmp_path / "other"
    for name in ("a", "b"):
        (other / name).mkdir(parents=True)
        for image in sorted((digits_dir / "1").iterdir())[:3]:
            (other / name / image.name).write_bytes(image.read_bytes())
    result = CliRunner().invoke(main, ["distill", str(other), "--teacher", str(teacher_run), "--student",
                                       "tf_efficientnet_lite0", "-o", str(tmp_path / "run"), "-q"])
    assert result.exit_code != 0 and "same classes" in result.output
    assert not (tmp_path / "run").exists()


def test_teacher_sees_the_students_crop_in_its_own_size_and_normalisation():
    from torch import nn

    from graft.methods.distillation import TeacherOnStudentInputs

    raw = torch.rand(2, 3, 32, 32)
    student_mean, student_std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    teacher_mean, teacher_std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    column = lambda v: torch.tensor(v).view(1, 3, 1, 1)  # noqa: E731
    seen = TeacherOnStudentInputs(nn.Identity(), 32, student_mean, student_std, teacher_mean, teacher_std)(
        (raw - column(student_mean)) / column(student_std))
    torch.testing.assert_close(seen, (raw - column(teacher_mean)) / column(teacher_std))
    resized = TeacherOnStudentInputs(nn.Identity(), 48, student_mean, student_std, student_mean, student_std)(raw)
    assert resized.shape == (2, 3, 48, 48)


def test_augmented_stages_run_the_teacher_on_each_batch(digits_dir, teacher_run, tmp_path):
    run = tmp_path / "student"
    result = CliRunner().invoke(main, ["distill", str(digits_dir), "--teacher", str(teacher_run), "--student",
                                       "tf_efficientnet_lite0", "--image-size", "64", "--stages", "head:1,top1:1",
                                       "--val-split", "0.25", "-o", str(run), "-q"])
    assert result.exit_code == 0, result.output
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [row["augmented"] for row in history] == [False, True]
    assert all(0 <= row["teacher_agreement"] <= 1 and row["soft_loss"] > 0 for row in history)


def test_with_mixing_the_teacher_labels_the_mixed_images():
    from graft.methods.distillation import Distillation, distillation_loss
    from graft.methods.mixing import BatchMixer

    seen = []

    def teacher(images):
        seen.append(images.clone())
        return images.flatten(1)[:, :4] * 10

    images, labels = torch.rand(6, 3, 2, 2), torch.tensor([0, 1, 2, 3, 0, 1])
    targets = torch.stack([labels, torch.arange(6)], 1)
    cached = torch.zeros(6, 4)  # the plain images' outputs: must not be used for a mixed batch
    method = Distillation(cached, temperature=2.0, alpha=1.0, teacher=teacher, mixer=BatchMixer(4, mixup_alpha=1.0))
    torch.manual_seed(0)
    student = []
    out = method.training_step(lambda x: student.append(x) or x.flatten(1)[:, :4], (images, targets), augmented=True)
    assert method.mixes(True) and not method.mixes(False)
    assert not torch.equal(student[0], images), "the batch was not mixed"
    torch.testing.assert_close(seen[0], student[0])  # the teacher saw exactly what the student saw
    expected = distillation_loss(student[0].flatten(1)[:, :4], seen[0].flatten(1)[:, :4] * 10, 2.0)
    torch.testing.assert_close(out.loss, expected)


@pytest.fixture(scope="module")
def forty_to_four(tmp_path_factory):
    """Real digits: 40 zeros and 4 ones to train on, 6 of each to validate; a teacher fitted on them."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    root = tmp_path_factory.mktemp("forty-to-four")
    for split, counts in (("train", {0: 40, 1: 4}), ("val", {0: 6, 1: 6})):
        for digit, count in counts.items():
            folder = root / split / f"d{digit}"
            folder.mkdir(parents=True)
            chosen = [i for i in range(len(digits.target)) if digits.target[i] == digit]
            chosen = chosen[:count] if split == "train" else chosen[-count:]
            for i in chosen:
                pixels = (digits.images[i] * (255 / 16)).astype("uint8")
                Image.fromarray(pixels).resize((32, 32)).convert("RGB").save(folder / f"{i}.png")
    teacher = root / "teacher"
    result = CliRunner().invoke(main, ["fit", str(root / "train"), "--val", str(root / "val"), "--image-size", "64",
                                       "-o", str(teacher), "-q"])
    assert result.exit_code == 0, result.output
    return root / "train", root / "val", teacher


def test_distill_keeps_the_balanced_sampler(forty_to_four, tmp_path):
    """It once rebuilt its loaders with shuffle=True: 40:4 stayed 40:4 under --sampler balanced."""
    train, val, teacher = forty_to_four
    drawn = {}
    for sampler in ("shuffle", "balanced"):
        run = tmp_path / sampler
        result = CliRunner().invoke(main, ["distill", str(train), "--val", str(val), "--teacher", str(teacher),
                                           "--student", "tf_efficientnet_lite0", "--image-size", "64",
                                           "--stages", "head:3", "--batch-size", "8", "--sampler", sampler,
                                           "-o", str(run), "-q"])
        assert result.exit_code == 0, result.output
        rows = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
        drawn[sampler] = np.sum([row["train_class_counts"] for row in rows], axis=0)
    assert drawn["shuffle"][1] / drawn["shuffle"].sum() < 0.15  # 4 of 44, as the folder holds
    assert 0.3 < drawn["balanced"][1] / drawn["balanced"].sum() < 0.7, drawn["balanced"]


def test_distill_under_torchrun_trains_each_rank_on_its_shard(forty_to_four, tmp_path):
    import socket
    import subprocess
    import sys

    train, val, teacher = forty_to_four
    with socket.socket() as probe:  # a free loopback port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    run = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", port, "-m", "graft", "distill", str(train), "--val", str(val), "--teacher",
               str(teacher), "--student", "tf_efficientnet_lite0", "--image-size", "64", "--stages", "head:1",
               "--batch-size", "8", "-o", str(run), "-q"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = json.loads((run / "history.jsonl").read_text().splitlines()[0])
    # 44 images over 2 ranks: 22 each, 2 full batches of 8 per rank (the whole folder would be 40)
    assert row["world_size"] == 2 and sum(row["train_class_counts"]) == 16


def test_out_may_not_be_the_teacher_it_reads(forty_to_four):
    """It once deleted the teacher's model with --overwrite, then failed: 'not a graft model'."""
    train, val, teacher = forty_to_four
    before = (teacher / "model" / "weights.safetensors").read_bytes()
    result = CliRunner().invoke(main, ["distill", str(train), "--val", str(val), "--teacher", str(teacher),
                                       "--student", "tf_efficientnet_lite0", "-o", str(teacher), "--overwrite"])
    assert result.exit_code == 2 and "the teacher run" in result.output and "choose another -o" in result.output
    assert (teacher / "model" / "weights.safetensors").read_bytes() == before


@pytest.fixture(scope="module")
def transfer_folder(forty_to_four, tmp_path_factory):
    """Ten unlabelled real digits (0s and 1s the labelled folders lack): six in nested folders
    whose names mean nothing, four flat, and one file that is no image."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    root = tmp_path_factory.mktemp("transfer") / "photos"
    chosen = [i for i in range(len(digits.target)) if digits.target[i] in (0, 1)][100:110]  # none trained on
    for n, i in enumerate(chosen):
        folder = root / "2023" / ("ones" if n % 2 else "misc") if n < 6 else root
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (digits.images[i] * (255 / 16)).astype("uint8")
        Image.fromarray(pixels).resize((32, 32)).convert("RGB").save(folder / f"u{i}.png")
    (root / "broken.png").write_bytes(b"not an image")
    return root


def _distill(train, val, teacher, run, *extra, alpha=("--alpha", "0.8")):
    return CliRunner().invoke(main, ["distill", str(train), "--val", str(val), "--teacher", str(teacher),
                                     "--student", "tf_efficientnet_lite0", "--image-size", "64", "--stages",
                                     "head:1", "--batch-size", "64", *alpha, "-o", str(run), "-q", *extra])


def test_the_soft_terms_default_weight_is_higher_with_a_transfer_set(forty_to_four, transfer_folder, tmp_path):
    """Without --alpha: 0.9 with --unlabelled (most images have only the teacher's targets), 0.5
    without; the saved value is what a resume trains with."""
    import yaml

    train, val, teacher = forty_to_four
    saved = {}
    for name, extra in (("with", ("--unlabelled", str(transfer_folder))), ("without", ())):
        assert _distill(train, val, teacher, tmp_path / name, *extra, alpha=()).exit_code == 0
        saved[name] = yaml.safe_load((tmp_path / name / "config.yaml").read_text())["settings"]["alpha"]
    assert saved == {"with": 0.9, "without": 0.5}


def test_unlabelled_images_are_learnt_from_the_teachers_soft_targets(forty_to_four, transfer_folder, tmp_path):
    train, val, teacher = forty_to_four
    result = _distill(train, val, teacher, tmp_path / "with", "--unlabelled", str(transfer_folder))
    assert result.exit_code == 0, result.output
    assert "skipping" in result.output and "broken.png" in result.output  # warned, then skipped
    run = tmp_path / "with"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n_train"] == 44 and metrics["n_unlabelled"] == 10
    assert [Path(s["path"]).name for s in metrics["skipped"]] == ["broken.png"]
    rows = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    # one batch of 54: every transfer image drawn once, and only the 44 labelled ones counted as labelled
    assert [row["transfer_images"] for row in rows] == [10]
    assert [sum(row["train_class_counts"]) for row in rows] == [44]
    listed = json.loads((run / "data.json").read_text())["unlabelled"]["files"]  # what a resume compares
    assert sorted(Path(name).name for name in listed) == sorted(p.name for p in transfer_folder.rglob("*.png"))
    assert len(listed) == 11 and "2023/misc/u" in " ".join(listed)
    without = tmp_path / "without"
    assert _distill(train, val, teacher, without).exit_code == 0
    assert "transfer_images" not in json.loads((without / "history.jsonl").read_text().splitlines()[0])
    assert (run / "model" / "weights.safetensors").read_bytes() != \
        (without / "model" / "weights.safetensors").read_bytes()
    # a resume checks the transfer set too: an image added since the run started is refused
    (run / "metrics.json").unlink()
    (transfer_folder / "added.png").write_bytes((next(transfer_folder.rglob("u*.png"))).read_bytes())
    try:
        resumed = CliRunner().invoke(main, ["resume", str(run), "-q"])
    finally:
        (transfer_folder / "added.png").unlink()
    assert resumed.exit_code == 2 and "data changed" in resumed.output and "added.png" in resumed.output


def test_unlabelled_folder_without_a_readable_image_is_one_line(forty_to_four, tmp_path):
    train, val, teacher = forty_to_four
    empty = tmp_path / "nothing"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "a.jpg").write_bytes(b"not a jpeg")
    result = _distill(train, val, teacher, tmp_path / "run", "--unlabelled", str(empty))
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and str(empty) in lines[0], result.output
    assert "no readable image" in lines[0]
    assert not (tmp_path / "run").exists()
