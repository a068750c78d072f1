"""Export from any genotype (a name or a file as well as a trial), trained weights from `explore train -o`,
and exported ONNX checked against torch in onnxruntime."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch
from typer.testing import CliRunner

import space
from cli import app
from explorer.trial import data as datasets
from explorer.trial import weights as W
from explorer.trial.trainer import evaluate

TINY = """
name: tiny
resolution: 16
classes: 10
stem: [{op: conv, out: 8, kernel: 3}]
stages:
- blocks: [{branches: [[{op: conv, out: 8}], [{op: conv, out: 8, kernel: 1}]], merge: sum, skip: residual}]
- blocks: [{branches: [[{op: conv, out: 16, stride: 2}]]}]
"""


def run(*args, cwd=None):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result


def perturbed_state(g, classes: int | None = None, in_channels: int = 3) -> dict:
    """Random weights and norm statistics, so a comparison can't pass on near-identity norms."""
    torch.manual_seed(1)
    model = space.build(g, classes, in_channels)
    state = model.state_dict()
    for key, value in state.items():
        if key.endswith("running_var"):
            state[key] = value.uniform_(0.5, 2.0)
        elif key.endswith("running_mean"):
            state[key] = value.normal_(0, 0.2)
    return state


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def check_onnx_against_torch(path, g, state, resolution, classes, in_channels=3):
    model = space.build(g, classes, in_channels, resolution).eval()
    model.load_state_dict(state, strict=True)
    x = torch.randn(2, in_channels, resolution, resolution, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model(x).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": x.numpy()})[0]
    assert got.shape == want.shape == (2, classes)
    assert relative_error(got, want) < 1e-4


def test_named_multi_branch_net_in_onnxruntime_equals_torch(tmp_path):
    """GoogLeNet (Inception branches, concat) exported with weights; onnxruntime's logits equal torch's."""
    state = perturbed_state("googlenet")
    torch.save(state, tmp_path / "w.pt")  # a plain state_dict: classes and channels are the genotype's
    result = run("export", "googlenet", "--weights", tmp_path / "w.pt", "-f", "onnx", "-o", tmp_path / "g.onnx")
    assert result.exit_code == 0, result.output
    assert "224px, 1000 classes, 3 input channels, trained weights from" in result.stdout
    check_onnx_against_torch(tmp_path / "g.onnx", "googlenet", state, 224, 1000)


def test_export_any_genotype_at_its_own_resolution_and_overrides(tmp_path):
    onnx = pytest.importorskip("onnx")
    result = run("export", "xception", "-f", "onnx", "-o", tmp_path / "x.onnx")
    assert result.exit_code == 0, result.output
    graph = onnx.load(str(tmp_path / "x.onnx")).graph
    dims = [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims[1:] == [3, 299, 299] and "299px" in result.stdout  # xception's own resolution, not 224
    (tmp_path / "tiny.yaml").write_text(TINY)
    result = run("export", tmp_path / "tiny.yaml", "-f", "torchscript", "-o", tmp_path / "t.pt", "--resolution", "24",
                 "--classes", "7", "--in-channels", "1")
    assert result.exit_code == 0, result.output
    traced = torch.jit.load(str(tmp_path / "t.pt"))
    assert traced(torch.randn(1, 1, 24, 24)).shape == (1, 7)
    assert run("export", tmp_path / "tiny.yaml", "-f", "yaml", "-o", tmp_path / "t.yaml").exit_code == 0
    assert space.digest(space.load(tmp_path / "t.yaml")) == space.digest(space.load(TINY))


def test_an_interrupted_train_resumes_from_its_checkpoint_and_refuses_another_runs(tmp_path):
    """Killed (SIGKILL) after its first epoch, the same command resumes, and ends bitwise where an
    uninterrupted run does; another run's checkpoint is refused in one line and kept."""
    (tmp_path / "tiny.yaml").write_text(TINY)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # bitwise equality needs the same threads
    command = [sys.executable, "-m", "cli", "train", "tiny.yaml", "--dataset", "digits", "--epochs", "3",
               "--batch-size", "32", "--device", "cpu", "--seed", "3", "-o"]
    subprocess.run(command + ["whole.pt"], cwd=tmp_path, env=env, check=True, capture_output=True)
    killed = subprocess.Popen(command + ["part.pt"], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    for line in killed.stderr:
        if line.startswith("epoch 1/3"):
            killed.kill()
            break
    killed.wait()
    assert not (tmp_path / "part.pt").exists()
    kept = (tmp_path / "part.pt.ckpt").read_bytes()
    resumed = subprocess.run(command + ["part.pt"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0 and "resumed from part.pt.ckpt after epoch 1" in resumed.stderr, resumed.stderr
    assert "epoch 1/3" not in resumed.stderr and "epoch 2/3" in resumed.stderr
    whole, part = (torch.load(tmp_path / f, weights_only=True) for f in ("whole.pt", "part.pt"))
    assert all(torch.equal(whole[k], part[k]) for k in whole)
    assert not (tmp_path / "part.pt.ckpt").exists()

    (tmp_path / "other.pt.ckpt").write_bytes(kept)  # the killed run's checkpoint, read by another seed
    result = subprocess.run(command[:-2] + ["4", "-o", "other.pt"], cwd=tmp_path, env=env, capture_output=True,
                            text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("error: -o: checkpoint other.pt.ckpt was written by another recipe, model or "
                                    "dataset; delete it"), result.stderr
    assert not (tmp_path / "other.pt").exists() and (tmp_path / "other.pt.ckpt").read_bytes() == kept


def test_train_outside_a_study_saves_weights_that_load_strictly_and_export(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.yaml").write_text(TINY)
    result = run("train", "tiny.yaml", "--dataset", "digits", "--epochs", "8", "--batch-size", "32", "--device", "cpu", "-o", "w.pt")
    assert result.exit_code == 0, result.output
    state = torch.load(tmp_path / "w.pt", weights_only=True)
    model = space.build("tiny.yaml", 10, 1).eval()
    model.load_state_dict(state, strict=True)  # the file is a plain state_dict
    _, meta = W.read(tmp_path / "w.pt")
    assert (meta.classes, meta.in_channels, meta.resolution, meta.dataset) == (10, 1, 16, "digits")
    data = datasets.load("digits", resolution=16, seed=0)
    accuracy = evaluate(model, data.val_x, data.val_y, data, torch.device("cpu"))
    assert accuracy == pytest.approx(meta.val_accuracy) and f"validation accuracy {accuracy:.4f}" in result.stdout
    assert accuracy > 0.3  # it learnt: 10 classes, chance is 0.1

    result = run("export", "tiny.yaml", "--weights", "w.pt", "-f", "torchscript", "-o", "t.pt")
    assert result.exit_code == 0 and "10 classes, 1 input channels, trained weights" in result.stdout, result.output
    x = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(torch.jit.load("t.pt")(x), model(x), rtol=1e-5, atol=1e-6)
    result = run("export", "tiny.yaml", "--weights", "w.pt", "-f", "onnx", "-o", "t.onnx")
    assert result.exit_code == 0, result.output
    check_onnx_against_torch(tmp_path / "t.onnx", "tiny.yaml", state, 16, 10, 1)


@pytest.mark.parametrize("args,phrase", [
    (["train", "resnet50"], "give --study STUDY (a reference point in a study) or -o FILE"),
    (["train", "resnet50", "--study", "s", "--epochs", "2"], "--epochs: with --study the study's settings train it"),
    (["export", "resnet50", "--weights", "missing.pt", "-f", "onnx", "-o", "x.onnx"], "--weights: missing.pt: no such file"),
    (["export", "resnet50", "--weights", "junk.pt", "-f", "onnx", "-o", "x.onnx"], "--weights: junk.pt is not a PyTorch"),
    (["export", "tiny.yaml", "--weights", "w.pt", "--classes", "5", "-f", "onnx", "-o", "x.onnx"],
     "doesn't fit tiny's network with 5 classes and 1 input channels"),
    (["export", "resnet50", "--weights", "w.pt", "-f", "onnx", "-o", "x.onnx"],
     "was trained for another genotype (tiny), not resnet50"),
    (["export", "inception_v3", "-r", "32", "-f", "onnx", "-o", "x.onnx"], "--resolution: inception_v3's network can't run at 32px"),
    (["export", "nothing", "-f", "onnx", "-o", "x.onnx"], "unknown genotype 'nothing'"),
])
def test_export_and_train_errors_are_one_line(tmp_path, monkeypatch, args, phrase):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.yaml").write_text(TINY)
    (tmp_path / "junk.pt").write_bytes(b"not a pickle")
    meta = W.Trained(space.schema.canonical_json(space.load(TINY)), 10, 1, 16, "digits", 0.5)
    torch.save(W.state_with_meta(space.build(TINY, 10, 1), meta), tmp_path / "w.pt")
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert phrase in result.stderr and "Traceback" not in result.output and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.onnx").exists()
