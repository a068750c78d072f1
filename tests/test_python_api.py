"""`explorer.search` from Python on your own data: arrays, tensors, NHWC, a Dataset, an .npz file; the
results, studies shared with the CLI both ways, bad data refused in one line, other data refused on resume."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_digits

import explorer
import space
from explorer.base.errors import DataError, UserError
from explorer.base.settings import default_proxy_resolution
from explorer.commands import USER_ERRORS
from explorer.sweep import objective
from explorer.trial import userdata

ROOT = Path(__file__).resolve().parents[1]
# Small and quick: one mobilenet proxy (16 px for digits' 8 px images), one epoch.
QUICK = dict(budget="2GFLOPs", space="mobilenet", trials=1, epochs=1, batch_size=32, progress=False, device="cpu")
QUICK_FLAGS = ["--budget", "2GFLOPs", "--space", "mobilenet", "--trials", "1", "--epochs", "1", "--batch-size", "32",
               "--device", "cpu"]


def explore(*args, cwd, check=True):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-m", "cli", *args], cwd=cwd, capture_output=True, text=True,
                         env=env, timeout=300)
    if check:
        assert run.returncode == 0, run.stderr + run.stdout
    return run


@pytest.fixture(scope="module")
def digits():
    """digits as a user has them: uint8 N x H x W images (0..255) and integer labels."""
    d = load_digits()
    return np.rint(d.images * (255 / 16)).astype(np.uint8), d.target


class Pairs(torch.utils.data.Dataset):
    """A map-style Dataset of (C x H x W float tensor in [0, 1], label), as torchvision's ToTensor gives."""

    def __init__(self, x, y, broken_at=None):
        self.x, self.y, self.broken_at = x, y, broken_at

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        if i == self.broken_at:
            raise OSError(f"image {i} is unreadable")
        return torch.from_numpy(self.x[i][None] / 255.0), int(self.y[i])


def forms(x, y, tmp_path):
    """The same images in every form explorer.search takes."""
    np.savez(tmp_path / "digits.npz", x=x, y=y)
    return {"arrays": (x, y), "nhwc float": (x[..., None] / 255.0, y),
            "tensors": (torch.from_numpy(x).unsqueeze(1).float(), torch.from_numpy(y)),
            "dataset": Pairs(x, y), "npz": f"npz:{tmp_path / 'digits.npz'}"}


@pytest.mark.parametrize("form", ["arrays", "nhwc float", "tensors", "dataset", "npz"])
def test_each_form_of_your_own_data_runs_a_search_end_to_end(form, digits, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = explorer.search(data=forms(*digits, tmp_path)[form], study="mine", **QUICK)
    (row,) = result.front
    assert isinstance(row.genotype, space.Genotype) and row.flops > 0 and row.params > 0
    assert 0 <= row.accuracy <= 1 and 0 < row.noise < 0.1 and row.label
    identity = result.settings.data
    assert identity["shape"] == [1, 8, 8] and identity["classes"] == 10 and identity["images"] == 1797
    # the same pixels in any form are the same data: one digest (the .npz is named by its path)
    assert identity["digest"] == userdata.from_python(digits).identity["digest"]
    assert result.settings.dataset == (forms(*digits, tmp_path)["npz"] if form == "npz" else "arrays:" + identity["digest"])
    trial = optuna.load_study(study_name="mine", storage="sqlite:///studies/mine/study.db").trials[0]
    assert trial.user_attrs["val_images"] == 144  # 10% of the 1438 left after the fixed test split, class-balanced


def test_the_result_shows_itself(digits, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = explorer.search(data=digits, study="shown", **QUICK)
    assert "study 'shown'" in repr(result) and "1/1 trials" in repr(result) and "multiply-adds" in repr(result)
    page = result._repr_html_()
    assert page.startswith("<table>") and page.count("<tr>") == 1 + len(result.front)
    assert result.best(1) == [result.front[0].genotype] and explorer.open_study("shown").best(5) == result.best(5)
    fig = result.plot()
    assert "shown" in fig.layout.title.text and len(fig.data) >= 2
    with pytest.raises(UserError, match="x: unknown axis 'latency'"):
        result.plot(x="latency")


def test_dataframe_has_every_trial_with_its_design_axes(digits, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    frame = explorer.search(data=digits, study="frame", **QUICK).dataframe()
    assert list(frame["state"]) == ["COMPLETE"] and {"accuracy", "family", "flops", "depth"} <= set(frame.columns)
    monkeypatch.setitem(sys.modules, "pandas", None)  # as where pandas isn't installed
    with pytest.raises(UserError, match="dataframe.. needs pandas: pip install pandas"):
        explorer.open_study("frame").dataframe()


def test_your_own_validation_data_is_used_as_given(digits, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    x, y = digits
    explorer.search(data=(x[:1500], y[:1500]), validation_data=(x[1500:], y[1500:]), study="val", **QUICK)
    trial = optuna.load_study(study_name="val", storage="sqlite:///studies/val/study.db").trials[0]
    assert trial.user_attrs["val_images"] == len(y) - 1500


def test_a_python_study_is_read_by_the_cli(digits, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = explorer.search(data=digits, study="py", **QUICK)
    rows = json.loads(explore("pareto", "py", "--json", cwd=tmp_path).stdout)
    assert [r["trial"] for r in rows] == [r.trial for r in result.front]
    assert "report: studies/py/report.html" in explore("report", "py", cwd=tmp_path).stdout
    resumed = explore("search", "--study", "py", cwd=tmp_path, check=False)  # its data is in no file
    assert resumed.returncode == 2 and "was given from Python" in resumed.stderr and "Traceback" not in resumed.stderr
    assert explorer.report(result, tmp_path / "mine.html").read_text().startswith("<!DOCTYPE html>")


def test_a_cli_study_on_an_npz_file_is_read_by_open_study(digits, tmp_path):
    np.savez(tmp_path / "d.npz", x_train=digits[0][:1500], y_train=digits[1][:1500], x_test=digits[0][1500:],
             y_test=digits[1][1500:])
    explore("search", "--dataset", "npz:d.npz", "--study", "cli", *QUICK_FLAGS, cwd=tmp_path)
    result = explorer.open_study("cli", storage=f"sqlite:///{tmp_path}/studies/cli/study.db")
    assert result.settings.dataset == "npz:d.npz" and result.settings.data["images"] == 1500
    assert len(result.front) == 1 and result.front[0].accuracy > 0


def test_resuming_with_other_data_is_refused(digits, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    x, y = digits
    explorer.search(data=(x, y), study="same", no_run=True, **QUICK)
    explorer.search(data=(x, y), study="same", no_run=True, **QUICK)  # the same data resumes
    flipped = x[:, :, ::-1].copy()
    with pytest.raises(UserError, match=r"^study 'same' was made with other settings \(stored → asked: data 1797 "
                                        r"images of 1x8x8, 10 classes, digest \w+ → 1797 images"):
        explorer.search(data=(flipped, y), study="same", no_run=True, **QUICK)


def test_a_changed_npz_file_is_refused_on_resume(digits, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.savez("d.npz", x=digits[0], y=digits[1])
    explorer.search(data="npz:d.npz", study="f", no_run=True, **QUICK)
    np.savez("d.npz", x=digits[0][:1000], y=digits[1][:1000])
    with pytest.raises(UserError, match=r"stored → asked: data 1797 images of 1x8x8, 10 classes, digest \w+ → 1000 images"):
        explorer.search(data="npz:d.npz", study="f", no_run=True, **QUICK)


def test_ctrl_c_leaves_the_study_resumable(digits, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    real_train = objective.train

    def interrupted(*args, **kwargs):
        monkeypatch.setattr(objective, "train", real_train)
        raise KeyboardInterrupt  # what a notebook's interrupt (SIGINT) raises in the running cell

    monkeypatch.setattr(objective, "train", interrupted)
    with pytest.raises(KeyboardInterrupt):
        explorer.search(data=digits, study="ctrl-c", **QUICK)
    result = explorer.search(data=digits, study="ctrl-c", **QUICK)
    assert len(result.front) == 1 and "1/1 trials" in repr(result)


def test_proxy_resolution_defaults_from_the_image_size(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    for side, expected in ((8, 16), (28, 12), (32, 32), (64, 32)):
        x, y = rng.integers(0, 256, (40, side, side, 3), dtype=np.uint8), np.arange(40) % 2
        result = explorer.search(data=(x, y), study=f"side{side}", budget="2GFLOPs", no_run=True, progress=False)
        assert result.settings.proxy_resolution == expected == default_proxy_resolution("arrays:", side)
        assert result.settings.data["shape"] == [3, side, side]
    assert [default_proxy_resolution(name) for name in ("digits", "mnist", "cifar10", "imagefolder:x")] == [16, 12, 32, 32]


# Bad data: one line naming the problem, before any study exists ------------------------------------

def bad_cases(x, y):
    nan = (x / 255.0).astype(np.float32)
    nan[3, 2, 2] = np.nan
    return {
        "mismatched lengths": ((x, y[:-5]), "data: 1797 images but 1792 labels"),
        "one class": ((x, np.zeros_like(y)), "data: every label is 0; classification needs at least 2 classes"),
        "NaN pixels": ((nan, y), "data: 1 pixel value is NaN or infinite"),
        "labels out of range": ((x, np.where(y == 3, 12, y)), "data: labels must be 0 to 9 for 10 classes; label 12 is out of range"),
        "negative labels": ((x, y - 1), "data: labels must be 0 to 9 for 10 classes; label -1 is out of range"),
        "5-D array": ((x[:, None, None], y), "data: images must be N x H x W, N x C x H x W or N x H x W x C; got a 5-D array"),
        "empty Dataset": (Pairs(x[:0], y[:0]), "data: the Dataset is empty"),
        "Dataset raising on item 7": (Pairs(x, y, broken_at=7), "data: the Dataset raised on item 7 (OSError: image 7 is unreadable)"),
        "images without labels": (x, "data: images alone have no labels; give (x, y)"),
        "string labels": ((x, y.astype(str)), "data: labels must be whole numbers 0 to K-1"),
        "normalised pixels": ((x / 255.0 - 0.5, y), "data: pixels must lie in [0, 1] or [0, 255]"),
    }


@pytest.mark.parametrize("case", list(bad_cases(np.zeros((8, 3, 3), np.uint8), np.zeros(8, int))))
def test_bad_data_is_refused_in_one_line(case, digits, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data, message = bad_cases(*digits)[case]
    with pytest.raises(USER_ERRORS) as caught:
        explorer.search(data=data, study="bad", **QUICK)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)
    assert not Path("studies").exists()  # nothing is stored for data that can't be searched


def test_bad_validation_data_is_refused_in_one_line(digits):
    x, y = digits
    with pytest.raises(DataError, match=r"^validation_data: label 10 is out of range; the training labels are 0 to 9$"):
        userdata.from_python((x, y), validation_data=(x[:5], np.full(5, 10)))
    with pytest.raises(DataError, match=r"^validation_data: images are 3x8x8 but the training images 1x8x8$"):
        userdata.from_python((x, y), validation_data=(np.zeros((5, 8, 8, 3), np.uint8), y[:5]))


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_generated_bad_arrays_are_refused_in_one_line(data):
    """Any array with a non-finite pixel, a label outside 0..K-1 or a length mismatch gets a DataError line."""
    n = data.draw(st.integers(4, 30))
    x = np.full((n, 5, 5), 0.5, dtype=np.float32)
    y = np.arange(n) % 2
    flaw = data.draw(st.sampled_from(["pixel", "label", "length"]))
    if flaw == "pixel":
        x[data.draw(st.integers(0, n - 1)), data.draw(st.integers(0, 4)), data.draw(st.integers(0, 4))] = \
            data.draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    elif flaw == "label":
        y[data.draw(st.integers(0, n - 1))] = data.draw(st.integers(3, 1000) | st.integers(-1000, -1))
    else:
        y = np.resize(y, n + data.draw(st.integers(1, 3)) * data.draw(st.sampled_from([-1, 1])))
    with pytest.raises(DataError) as caught:
        userdata.from_python((x, y))
    assert str(caught.value).startswith("data: ") and "\n" not in str(caught.value)


def test_a_bad_npz_file_is_refused_in_one_line(digits, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.savez("labels.npz", x=digits[0], labels=digits[1])
    Path("text.npz").write_text("not a zip")
    for name, message in (("text.npz", "--dataset npz:text.npz: not a readable .npz file"),
                          ("absent.npz", "--dataset npz:absent.npz: no file absent.npz")):
        with pytest.raises(DataError) as caught:
            explorer.search(data=f"npz:{name}", **QUICK)
        assert str(caught.value).startswith(message) and "\n" not in str(caught.value)
    run = explore("search", "--dataset", "npz:labels.npz", *QUICK_FLAGS, cwd=tmp_path, check=False)
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1
    assert "--dataset npz:labels.npz: holds labels, x; it needs x and y (or x_train and y_train)" in run.stderr
    assert not Path("studies").exists()


def test_unknown_settings_and_data_from_python_in_worker_processes_are_refused(digits):
    with pytest.raises(UserError, match="^epoch: not a setting of explorer.search"):
        explorer.search(data=digits, epoch=3)
    with pytest.raises(UserError, match="^jobs: data given from Python stays in this process"):
        explorer.search(data=digits, jobs=2, **QUICK)


def test_the_example_notebook_runs(tmp_path):
    """examples/notebook.ipynb, executed as Jupyter would, in a kernel of its own: the search's live view is a
    widget (rich's Jupyter view), the result shows its front as a table, the plot is plotly's."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(ROOT / "examples" / "notebook.ipynb", as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    shown = notebook.cells[3].outputs[-1]["data"]
    assert shown["text/html"].startswith("<table>") and "study 'notebook'" in shown["text/plain"]
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in notebook.cells[3].outputs)
    assert "application/vnd.plotly.v1+json" in notebook.cells[6].outputs[0]["data"]
    assert (tmp_path / "studies" / "notebook" / "study.db").exists()


def test_the_held_data_is_a_copy_of_yours(digits):
    """Changing your arrays after the search has them changes nothing it holds."""
    x, y = digits
    x_val = x[1500:].copy()
    user = userdata.from_python((x[:1500], y[:1500]), validation_data=(x_val, y[1500:]))
    x_val[:] = 0
    assert user.raw.val_x.sum() == x[1500:].astype(np.int64).sum() > 0


def test_explorer_loads_torch_only_when_its_api_is_used():
    """`import explorer`, explorer.base and `explore search --help` stay light; importing the layers (the sweep
    among them) leaves `explorer.search` the function."""
    code = ("import sys, explorer, explorer.base.settings, cli\n"
            "sys.argv = ['explore', 'search', '--help']\n"
            "try:\n    cli.app()\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch loaded'\n"
            "from explorer.sweep import objective\n"
            "assert explorer.search.__module__ == 'explorer.commands.api' and 'torch' in sys.modules\n"
            "assert explorer.open_study.__name__ == 'open_study' and explorer.Result.__name__ == 'Result'\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "npz:PATH" in run.stdout  # --dataset's help names your own arrays


def test_fidelity_takes_the_study_s_data_again_and_only_that(digits, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    x, y = digits
    result = explorer.search(data=(x, y), study="fid", no_run=True, **QUICK)
    with pytest.raises(UserError, match="^data: this is other data than study 'fid' searched on"):
        explorer.fidelity(result, data=(x[:, ::-1].copy(), y))
    with pytest.raises(UserError, match="^study 'fid' has 0 completed trials"):  # the same data is taken
        explorer.fidelity("fid", data=(x, y))


def test_workers_read_an_npz_study_s_data_from_its_file(digits, tmp_path, monkeypatch):
    """Data in a file, unlike data held in one Python process, reaches `explore worker` processes."""
    monkeypatch.chdir(tmp_path)
    np.savez("d.npz", x=digits[0], y=digits[1])
    explorer.search(data="npz:d.npz", study="w", no_run=True, **QUICK)
    explore("worker", "--study", "w", "--device", "cpu", cwd=tmp_path)
    result = explorer.open_study("w")
    assert len(result.front) == 1 and result.dataframe()["dataset"].tolist() == ["npz:d.npz"]
