"""Datasets: built-in, generated and a user's files, split by seed, never unpickled."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from core.csv_table import CsvError, read_table
from core.datasets import DatasetError, load_builtin, load_file, parse_csv, parse_npz
from core.preprocessing import apply_affine, invert_affine, prepare
from core.spec import DatasetSpec

BUILTINS = {
    "digits": ((1, 8, 8), "classification", 10, 1797),
    "iris": ((4,), "classification", 3, 150),
    "wine": ((13,), "classification", 3, 178),
    "breast_cancer": ((30,), "classification", 2, 569),
    "diabetes": ((10,), "regression", None, 442),
    "mnist": ((1, 28, 28), "classification", 10, 60_000),
    "moons": ((2,), "classification", 2, 1000),
    "circles": ((2,), "classification", 2, 1000),
    "blobs": ((2,), "classification", 3, 1000),
    "spirals": ((2,), "classification", 2, 1000),
    "sine": ((1,), "regression", None, 1000),
    "road": ((1, 30, 32), "regression", None, 2000),
}


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_load_builtin_has_its_shape_and_classes(name: str) -> None:
    shape, task, classes, samples = BUILTINS[name]
    ds = load_builtin(DatasetSpec(name=name), seed=0)  # type: ignore[arg-type]
    assert (
        ds.input_shape == shape
        and ds.task == task
        and ds.num_classes == classes
        and len(ds.x) == samples
    )
    assert np.all(np.isfinite(ds.x))
    if name == "mnist":
        assert ds.x_test is not None and ds.x_test.shape == (10_000, 1, 28, 28)
        assert ds.x.max() == 255.0 and ds.pixel_scale == pytest.approx(1 / 255)


def test_generated_options_apply_only_to_generated_sets() -> None:
    ds = load_builtin(DatasetSpec(name="blobs", n_samples=120, classes=5), seed=3)
    assert len(ds.x) == 120 and ds.num_classes == 5
    with pytest.raises(DatasetError, match="apply to generated datasets, not 'iris'"):
        load_builtin(DatasetSpec(name="iris", n_samples=100), seed=0)


def test_split_is_deterministic_by_seed() -> None:
    ds = load_builtin(DatasetSpec(name="iris"), seed=0)
    a = prepare(ds, validation_split=0.2, test_split=0.1, seed=5, standardize=None)
    b = prepare(ds, validation_split=0.2, test_split=0.1, seed=5, standardize=None)
    c = prepare(ds, validation_split=0.2, test_split=0.1, seed=6, standardize=None)
    assert (
        a.x_val is not None and b.x_val is not None and c.x_val is not None and a.x_test is not None
    )
    assert np.array_equal(a.x_val, b.x_val) and not np.array_equal(a.x_val, c.x_val)
    assert len(a.x_train) + len(a.x_val) + len(a.x_test) == 150
    assert abs(a.x_train.mean()) < 1e-5  # standardised on the training split


def test_preprocessing_round_trips_regression_targets() -> None:
    ds = load_builtin(DatasetSpec(name="diabetes"), seed=0)
    p = prepare(ds, validation_split=0.0, test_split=0.0, seed=0, standardize=None)
    assert p.preprocessing["target"] is not None
    assert np.allclose(invert_affine(p.y_train, p.preprocessing["target"]), ds.y, atol=1e-3)
    assert np.allclose(apply_affine(ds.x, p.preprocessing["features"]), p.x_train, atol=1e-5)


def test_mnist_has_its_own_test_split() -> None:
    ds = load_builtin(DatasetSpec(name="mnist"), seed=0)
    with pytest.raises(DatasetError, match="mnist has its own test split"):
        prepare(ds, validation_split=0.0, test_split=0.1, seed=0, standardize=None)


def test_parse_csv_with_named_string_target() -> None:
    data = b"a,label,b\n1,cat,2\n3,dog,4\n5,cat,6\n"
    ds = parse_csv(data, target="label", task=None, name="pets")
    assert ds.task == "classification" and ds.class_names == ["cat", "dog"]
    assert ds.feature_names == ["a", "b"] and ds.x.tolist() == [[1, 2], [3, 4], [5, 6]]
    assert ds.y.tolist() == [0, 1, 0]


def test_parse_csv_numeric_target_regression() -> None:
    ds = parse_csv(b"x,y\n0.5,1.25\n1.5,2.5\n2,3.75\n", target=None, task="regression", name="r")
    assert ds.task == "regression" and ds.y.shape == (3, 1)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"a,b\n1,2\n", "a CSV needs a header row and at least two data rows"),
        (b"a,b\n1,2\n3\n4,5\n", "line 3: 1 fields, the header has 2"),
        (b"a,b\n1,x\nz,1\n", "line 3: feature values must be numbers"),
        (b"a,b\n1,0\n2,0\n", "target column 'b' has one class"),
        (b"\xff\xfe,\x00", "not a UTF-8 CSV file"),
    ],
)
def test_parse_csv_refuses_bad_files(data: bytes, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        parse_csv(data, target=None, task=None, name="bad")


def test_parse_csv_unknown_target_column() -> None:
    with pytest.raises(DatasetError, match="target column 'nope' is not in the header"):
        parse_csv(b"a,b\n1,2\n3,4\n", target="nope", task=None, name="bad")


def _npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def test_parse_npz_images_with_test_split() -> None:
    x = np.random.default_rng(0).random((20, 1, 4, 4)).astype(np.float32)
    y = np.arange(20) % 3
    ds = parse_npz(_npz(x=x, y=y, x_test=x[:5], y_test=y[:5]), task=None, name="imgs")
    assert (
        ds.kind == "image" and ds.num_classes == 3 and ds.x_test is not None and len(ds.x_test) == 5
    )


def test_parse_npz_never_unpickles() -> None:
    objects = np.array([{"evil": 1}, {"evil": 2}], dtype=object)
    with pytest.raises(DatasetError, match="not a readable NPZ file of plain arrays"):
        parse_npz(_npz(x=objects, y=np.array([0, 1])), task=None, name="evil")


TRAIN = {"x": np.zeros((4, 2)), "y": np.array([0, 1, 0, 1])}


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((4, 2))}, "an NPZ needs arrays named 'x' and 'y'"),
        (
            {"x": np.zeros((4, 2)), "y": np.zeros(3)},
            "'x' must be \\(N, ...\\) and 'y' \\(N, ...\\)",
        ),
        ({"x": np.full((4, 2), np.nan), "y": np.zeros(4)}, "must hold finite numbers"),
        # x_test / y_test are held to the same rules (they were a 500, or a job failing after training).
        (
            {**TRAIN, "x_test": np.array([["a", "b"]]), "y_test": np.array([0])},
            "'x_test' and 'y_test' must be numeric",
        ),
        (
            {**TRAIN, "x_test": np.full((2, 2), np.nan), "y_test": np.zeros(2)},
            "'x_test' and 'y_test' must hold finite",
        ),
        (
            {**TRAIN, "x_test": np.zeros((2, 2)), "y_test": np.array([0, 999])},
            "'y_test' has class 999, which 'y' never",
        ),
        (
            {**TRAIN, "x_test": np.zeros((2, 3)), "y_test": np.zeros(2)},
            "'x_test', 'y_test' samples are \\(3,\\)",
        ),
        (
            {**TRAIN, "x_test": np.zeros((2, 2)), "y_test": np.array([0.5, 1])},
            "targets must be class ids",
        ),
    ],
)
def test_parse_npz_refuses_bad_arrays(arrays: dict[str, np.ndarray], message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        parse_npz(_npz(**arrays), task=None, name="bad")


def test_load_file_by_suffix(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("f,t\n1,0\n2,1\n3,0\n4,1\n")
    assert load_file(path).num_classes == 2
    with pytest.raises(DatasetError, match=r"unsupported file type '\.txt'"):
        load_file(tmp_path / "t.txt")


def test_a_csv_is_parsed_in_under_4x_its_size() -> None:
    """Read whole into Python lists, a CSV cost 13x its size (22x in RSS); now chunks go into one
    float32 array. tracemalloc counts numpy's buffers too."""
    import tracemalloc

    rng = np.random.default_rng(0)
    rows = rng.normal(size=(40_000, 9)).round(5)
    data = (
        "a,b,c,d,e,f,g,h,i,label\n"
        + "".join(",".join(f"{v:.5f}" for v in r) + f",{int(r[0] > 0)}\n" for r in rows)
    ).encode()
    tracemalloc.start()
    ds = parse_csv(data, target=None, task=None, name="big")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert ds.x.shape == (40_000, 9) and ds.num_classes == 2
    assert np.allclose(ds.x, rows.astype(np.float32))
    assert (peak + len(data)) / len(data) < 4, f"{peak / len(data):.1f}x the file's size"


@pytest.mark.parametrize(
    "chunk", [2, 3, 2048]
)  # the change from numbers to text mid-chunk, at a boundary, in one
def test_a_target_that_turns_out_to_be_text_keeps_every_label(chunk: int) -> None:
    """The target column is parsed as numbers until a value is not one; the rows before it become
    text again, each as it was written."""
    labels = ["1", "2", "1", "2.50", "cat", "1", "dog", "2.50"]
    data = ("a,b,label\n" + "".join(f"{i},{i * 2},{v}\n" for i, v in enumerate(labels))).encode()
    _, _, x, target = read_table(data, None, max_columns=10, max_classes=100, chunk_rows=chunk)
    assert target.numbers is None and target.texts == labels
    assert x[:, 1].tolist() == [2.0 * i for i in range(len(labels))]
    ds = parse_csv(data, target=None, task=None, name="t")
    assert ds.class_names == sorted(set(labels))
    assert [ds.class_names[i] for i in ds.y.tolist()] == labels
    assert ds.x[:, 1].tolist() == [2.0 * i for i in range(len(labels))]


def test_numeric_classes_keep_their_text_and_order_by_value() -> None:
    """Classes are sorted by value (10 after 9, not before 2) and named as first written."""
    values = ["10", "9", "2", "10.0", "9", "2"]
    data = ("a,label\n" + "".join(f"{i},{v}\n" for i, v in enumerate(values))).encode()
    ds = parse_csv(data, target=None, task="classification", name="t")
    assert ds.class_names == ["2", "9", "10"]
    assert ds.y.tolist() == [2, 1, 0, 2, 1, 0]


@pytest.mark.parametrize(("tail", "message"), [("nan", "non-finite"), ("inf", "non-finite")])
def test_a_numeric_target_must_be_finite(tail: str, message: str) -> None:
    data = f"a,label\n1,0\n2,1\n3,{tail}\n".encode()
    for task in (None, "classification", "regression"):
        with pytest.raises(DatasetError, match=message):
            parse_csv(data, target=None, task=task, name="t")  # type: ignore[arg-type]


def test_a_text_target_with_too_many_values_is_refused() -> None:
    """Past the class limit the numbers' texts are no longer kept, so a later text value ends it."""
    data = ("a,label\n" + "".join(f"{i},{i}.5\n" for i in range(10)) + "10,oops\n").encode()
    with pytest.raises(CsvError, match="not numeric and has over 5 distinct values"):
        read_table(data, None, max_columns=10, max_classes=5, chunk_rows=4)
