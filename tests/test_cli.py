"""`fitserve train` and `fitserve validate` as a user runs them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.helpers import EXAMPLES

FITSERVE = shutil.which("fitserve", path=str(Path(sys.executable).parent)) or "fitserve"


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FITSERVE, *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )


def test_train_prints_the_metrics_table_and_checkpoint(tmp_path: Path) -> None:
    spec = json.loads((EXAMPLES / "digits_mlp.json").read_text())
    spec["fit"]["epochs"] = 2
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    done = run("train", "spec.json", "--out", "run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "metrics" in done.stdout and "val_accuracy" in done.stdout
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("checkpoint: "))
    assert Path(line.removeprefix("checkpoint: ")) == tmp_path / "run" / "model.json"
    assert (tmp_path / "run" / "model.safetensors").exists()
    assert "completed after 2 epochs" in done.stderr


def test_train_on_a_csv_file(tmp_path: Path) -> None:
    rows = ["a,b,label"] + [
        f"{i % 7},{(i * 3) % 5},{'yes' if i % 7 > 3 else 'no'}" for i in range(60)
    ]
    (tmp_path / "d.csv").write_text("\n".join(rows))
    spec = {
        "dataset": {"name": "iris"},
        "model": {"preset": "mlp"},
        "compile": {"loss": "sparse_categorical_crossentropy"},
        "fit": {"epochs": 1},
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    done = run(
        "train", "spec.json", "--data", "d.csv", "--target", "label", "--out", "run", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    assert meta["class_names"] == ["no", "yes"] and meta["info"]["input_shape"] == [2]


def test_train_refuses_a_bad_spec_naming_the_field(tmp_path: Path) -> None:
    spec = {
        "dataset": {"name": "digits"},
        "model": {"layers": [{"type": "dense", "units": 0}]},
        "compile": {"loss": "mse"},
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    done = run("train", "spec.json", cwd=tmp_path)
    assert done.returncode == 2
    assert "model.layers.0.dense.units: Input should be greater than or equal to 1" in done.stderr


def test_validate_prints_the_dry_run(tmp_path: Path) -> None:
    done = run("validate", str(EXAMPLES / "mnist_mlp.json"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["parameters"] == 784 * 512 + 512 + 512 * 10 + 10
    assert (
        report["output_shape"] == [10]
        and report["estimated_memory_bytes"] > 4 * report["parameters"]
    )


def test_train_a_family_whose_epochs_report_different_metrics(tmp_path: Path) -> None:
    """A DBN's pretraining epochs report no accuracy; its fine-tuning epochs do."""
    spec = json.loads((EXAMPLES / "digits_dbn.json").read_text())
    spec["dbn"] |= {"hidden_units": [32], "pretrain_epochs": 1}
    spec["fit"]["epochs"] = 2
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    done = run("train", "spec.json", "--out", "run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "val_accuracy" in done.stdout and "completed after 2 epochs" in done.stderr
