"""Model export: a checkpoint as one zip archive, in one of three formats.

- `safetensors`: the checkpoint's own files as Fitserve serves them (model.json and its tensors),
  with a README.txt saying what the model takes.
- `onnx`: one graph per exportable operation (`<operation>.onnx`, opset OPSET, a dynamic batch
  axis) with the preprocessing inside, so it takes raw inputs and answers in served units.
- `torchscript`: the same graphs as TorchScript (`<operation>.pt`, `torch.jit.load`).

Both graph formats come from `torch.jit.trace` (ONNX through the TorchScript-based exporter,
`dynamo=False`): docs/export.md has the measurements behind that choice. Every traced graph is
checked against the module it came from on a batch of another size before it is written, so a
size or branch the tracer froze is refused rather than shipped.
"""

from __future__ import annotations

import io
import json
import os
import threading
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.checkpoint_meta import Preprocessing
from models.export_families import NOT_EXPORTED, graphs
from models.export_graphs import ExportError, Graph, Port
from models.families.predictor import Predictor

__all__ = ["FORMATS", "OPSET", "ExportError", "build_archive", "export_files", "write_archive"]

FORMATS = ("safetensors", "onnx", "torchscript")
OPSET = 17  # the first with LayerNormalization as one op; every runtime of the last years reads it
EXPORT_VERSION = 1
TRACE_BATCH, CHECK_BATCH = 3, 7  # two sizes: a batch size frozen into the graph shows up
CHECK_TOLERANCE = 1e-4
_SUFFIX = {"onnx": "onnx", "torchscript": "pt"}
_ZIP_TIME = (2020, 1, 1, 0, 0, 0)  # fixed, so one model always gives the same archive


def sample_inputs(
    graph: Graph, preprocessing: Preprocessing, n: int, seed: int
) -> tuple[torch.Tensor, ...]:
    """Inputs to trace and check with: token ids and labels in range, raw features spread as the
    training data were (model-space normal draws taken back to raw units)."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for port in graph.inputs:
        shape = (n, *port.shape)
        if port.dtype == "int64":
            out.append(torch.randint(0, port.high or 2, shape, generator=generator))
            continue
        x = torch.randn(shape, generator=generator)
        features = preprocessing.get("features")
        if port.name == "instances" and features:
            offset = torch.tensor(features["offset"], dtype=torch.float32)
            x = x / torch.tensor(features["scale"], dtype=torch.float32) + offset
        out.append(x)
    return tuple(out)


def _as_tuple(out: Any) -> tuple[torch.Tensor, ...]:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


# The tracer warns about every Python-side size it records; the check against a second batch size
# is what decides, so the warnings would only fill the service's log. Filtered once, here: the
# exports run in the API's threads, and warnings.catch_warnings is not thread-safe.
warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
# PyTorch 2.13 deprecates both tracers in favour of torch.export (docs/export.md says why they are
# used still) and notes each slice it cannot fold: said once in the docs, not per export in the log.
KNOWN_WARNINGS = (
    r"You are using the legacy TorchScript-based ONNX export",
    r"`torch\.jit\.(trace|save)",
    r"The feature will be removed",
    r"Constant folding - Only steps=1",
)
for _message in KNOWN_WARNINGS:
    warnings.filterwarnings("ignore", message=_message)


@contextmanager
def _tracing() -> Iterator[None]:
    # Gradients on: without them attention takes its fused fast path
    # (aten::_native_multi_head_attention, _transformer_encoder_layer_fwd), which no ONNX opset
    # has; the composite path it takes with gradients computes the same values.
    with torch.enable_grad():
        yield


def _trace(graph: Graph, example: tuple[torch.Tensor, ...]) -> torch.jit.ScriptModule:
    traced = torch.jit.trace(graph.module, example, check_trace=False)
    return traced


def _check(graph: Graph, run: Any, inputs: tuple[torch.Tensor, ...]) -> None:
    """The exported graph against the served module on a batch of CHECK_BATCH."""
    want, got = _as_tuple(graph.module(*inputs)), _as_tuple(run(*inputs))
    for port, a, b in zip(graph.outputs, want, got, strict=True):
        if a.shape != b.shape or not torch.allclose(
            a.double(), b.double(), atol=CHECK_TOLERANCE, rtol=CHECK_TOLERANCE
        ):
            raise ExportError(
                f"{graph.operation}: the traced graph's {port.name} differs from the model's "
                "(the model holds a branch or size the tracer cannot follow)"
            )


def _onnx_bytes(graph: Graph, example: tuple[torch.Tensor, ...]) -> bytes:
    names_in = [p.name for p in graph.inputs]
    names_out = [p.name for p in graph.outputs]
    buffer = io.BytesIO()
    torch.onnx.export(
        graph.module,
        example,
        buffer,  # type: ignore[arg-type]  # a file object works: torch's type hints name only paths
        dynamo=False,
        input_names=names_in,
        output_names=names_out,
        opset_version=OPSET,
        dynamic_axes={name: {0: "batch"} for name in names_in + names_out},
    )
    return buffer.getvalue()


def _script_bytes(traced: torch.jit.ScriptModule) -> bytes:
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    return buffer.getvalue()


def _first_line(exc: Exception) -> str:
    # the exporter's messages run to tracebacks of the TorchScript interpreter: the first line says it
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _failing_layer(graph: Graph, example: tuple[torch.Tensor, ...]) -> str | None:
    """`<part>layer N (type): why` for the first layer that does not export alone, or None."""
    seen: dict[int, torch.Tensor] = {}
    hooks = []
    for _, _, body in graph.parts:
        for module in body:

            def keep(_: nn.Module, args: tuple[Any, ...], key: int = id(module)) -> None:
                seen.setdefault(key, args[0])

            hooks.append(module.register_forward_pre_hook(keep))
    try:
        graph.module(*example)
    finally:
        for hook in hooks:
            hook.remove()
    for where, layers, body in graph.parts:
        for index, module in enumerate(body):
            x = seen.get(id(module))
            if x is None:
                continue
            try:
                torch.onnx.export(module, (x,), io.BytesIO(), dynamo=False, opset_version=OPSET)  # type: ignore[arg-type]
            except Exception as exc:  # the exporter's own error types, per op
                return f"{where}layer {index} ({layers[index].type}) cannot be exported: {_first_line(exc)}"
    return None


def export_graph(graph: Graph, fmt: str, preprocessing: Preprocessing) -> tuple[bytes, list[Port]]:
    """One operation's file in `fmt`, and its outputs with their per-sample shapes."""
    graph.module.eval()
    example = sample_inputs(graph, preprocessing, TRACE_BATCH, seed=0)
    check = sample_inputs(graph, preprocessing, CHECK_BATCH, seed=1)
    with _tracing():
        try:
            traced = _trace(graph, example)
            _check(graph, traced, check)
            data = _onnx_bytes(graph, example) if fmt == "onnx" else _script_bytes(traced)
        except ExportError:
            raise
        except Exception as exc:  # the tracer's and the exporter's error types
            named = _failing_layer(graph, example)
            raise ExportError(
                named or f"{graph.operation}: cannot be exported: {_first_line(exc)}"
            ) from exc
        shapes = [tuple(t.shape[1:]) for t in _as_tuple(graph.module(*example))]
    outputs = [
        Port(p.name, p.dtype, shape, p.description, p.high)
        for p, shape in zip(graph.outputs, shapes, strict=True)
    ]
    return data, outputs


def _port(port: Port) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": port.name,
        "dtype": port.dtype,
        "shape": ["batch", *port.shape],
        "description": port.description,
    }
    return out


def _steps(preprocessing: Preprocessing, tokens: bool) -> list[str]:
    if tokens:
        return ["none: token ids are taken as given (int64)"]
    steps = []
    if preprocessing.get("binarize") is not None:
        steps.append(f"instances: x > {preprocessing['binarize']} becomes 1.0, else 0.0 (float32)")
    if preprocessing.get("features"):
        steps.append(
            "instances: (x - features.offset) * features.scale; "
            "outputs in raw units: y / features.scale + features.offset"
        )
    if preprocessing.get("target"):
        steps.append("regression predictions: y / target.scale + target.offset")
    return steps or ["none: the model was trained on the raw values"]


def signature(
    predictor: Predictor, fmt: str, job_id: str, ops: dict[str, tuple[str, Graph, list[Port]]]
) -> dict[str, Any]:
    """signature.json: what each file takes and gives, and what was baked into it."""
    model = predictor.model
    preprocessing = model.meta.preprocessing
    tokens = any(
        p.dtype == "int64" and p.name == "instances" for _, g, _ in ops.values() for p in g.inputs
    )
    out: dict[str, Any] = {
        "fitserve_export": EXPORT_VERSION,
        "format": fmt,
        "job_id": job_id,
        "family": predictor.family,
        "task": model.info.task,
        "input_shape": list(model.info.input_shape),
        "class_names": model.meta.class_names,
        "preprocessing": {
            "baked_in": True,
            "steps": _steps(preprocessing, tokens),
            "values": dict(preprocessing),
        },
        "operations": {
            name: {
                "file": file,
                "inputs": [_port(p) for p in graph.inputs],
                "outputs": [_port(p) for p in outputs],
            }
            for name, (file, graph, outputs) in ops.items()
        },
        "not_exported": NOT_EXPORTED.get(predictor.family, {}),
    }
    if fmt == "onnx":
        out["opset"] = OPSET
    else:
        out["load"] = "torch.jit.load(file); outputs = module(*inputs)"
    out["torch"] = torch.__version__
    return out


def _readme(predictor: Predictor, fmt: str, job_id: str) -> str:
    info = predictor.model.info
    head = [
        f"Fitserve export of job {job_id}: a {predictor.family} model ({info.task}), format {fmt}.",
        f"Instances have shape {list(info.input_shape)} (a leading batch axis in every file).",
    ]
    if fmt == "safetensors":
        body = [
            "model.json and its safetensors file are the checkpoint Fitserve serves, byte for byte:",
            "model.json holds the spec, the data's description and the preprocessing predict applies",
            f"to raw instances: {json.dumps(dict(predictor.model.meta.preprocessing))}.",
            "The tensors are the model's state under 'model.' (safetensors.torch.load_file).",
        ]
    else:
        body = [
            "signature.json names each operation's file, inputs and outputs; the preprocessing is",
            "inside the graphs: they take raw inputs and answer in the units predict answers in.",
        ]
    return "\n".join(head + body) + "\n"


def export_files(predictor: Predictor, meta_path: Path, fmt: str, job_id: str) -> dict[str, bytes]:
    """The archive's files, by name. Raises ExportError naming the family, operation or layer."""
    if fmt not in FORMATS:
        raise ExportError(f"format must be one of {list(FORMATS)}, not {fmt!r}")
    if fmt == "safetensors":
        weights = predictor.model.meta.weights
        return {
            "model.json": meta_path.read_bytes(),
            weights: meta_path.with_name(weights).read_bytes(),
            "README.txt": _readme(predictor, fmt, job_id).encode(),
        }
    files: dict[str, bytes] = {}
    ops: dict[str, tuple[str, Graph, list[Port]]] = {}
    for graph in graphs(predictor.model):
        data, outputs = export_graph(graph, fmt, predictor.model.meta.preprocessing)
        name = f"{graph.operation}.{_SUFFIX[fmt]}"
        files[name] = data
        ops[graph.operation] = (name, graph, outputs)
    files["signature.json"] = json.dumps(signature(predictor, fmt, job_id, ops), indent=1).encode()
    files["README.txt"] = _readme(predictor, fmt, job_id).encode()
    return files


def write_archive(files: dict[str, bytes], dest: Path) -> None:
    """A zip written beside `dest` and renamed onto it: a reader sees the whole archive or none."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(zipfile.ZipInfo(name, _ZIP_TIME), data, zipfile.ZIP_DEFLATED)
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, dest)


def build_archive(meta_path: Path, fmt: str, dest: Path, job_id: str) -> None:
    """Load the checkpoint afresh (never the serving cache's module: tracing runs it) and export it."""
    predictor = Predictor.load(meta_path)
    write_archive(export_files(predictor, meta_path, fmt, job_id), dest)
