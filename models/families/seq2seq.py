"""Seq2seq: token sequence -> token sequence, with an encoder RNN, a decoder RNN and Luong
attention (the "general" score, h_t^T W_a h_s, without input feeding).

Luong rather than Bahdanau because its attention reads the decoder's *current* state: under
teacher forcing the decoder RNN then runs over the whole target in one call (one fused LSTM/GRU
kernel) and attention is two batched matmuls, where Bahdanau's additive score needs the previous
state inside a Python step loop. Greedy decoding (evaluation, predict) steps one token at a time.

The decoder's first input is a start token, id `vocabulary` (one embedding row past the target
ids), so a dataset needs no reserved ids. Source and target vocabularies may differ
(`seq2seq.input_vocabulary`), and so may the lengths: the decoder emits `info.target_dim` tokens.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from core.spec import DataInfo, JobSpec, Seq2SeqJob, as_family
from core.spec.families import Seq2SeqSpec
from models.errors import PredictError, SpecError
from models.families import FamilyModel, Operation, OperationRequest, refuse_unused
from models.validation import DryRun, optimizer_slots

# Built-in datasets that map token ids to token ids; any other built-in name is refused.
TOKEN_DATASETS = ("sequence_reverse", "sequence_copy")
UPLOAD_HINT = "or upload an NPZ with x: int (N, L) token ids and y: int (N, L_out) token ids"
Shape = tuple[int, ...]


def _rnn(cell: str) -> type[nn.LSTM] | type[nn.GRU]:
    return nn.LSTM if cell == "lstm" else nn.GRU


class Encoder(nn.Module):
    def __init__(self, cfg: Seq2SeqSpec, vocabulary: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocabulary, cfg.embedding_dim)
        self.rnn = _rnn(cfg.cell)(
            cfg.embedding_dim,
            cfg.units,
            cfg.num_layers,
            batch_first=True,
            bidirectional=cfg.bidirectional_encoder,
        )
        self.layers, self.bidirectional, self.lstm = (
            cfg.num_layers,
            cfg.bidirectional_encoder,
            cfg.cell == "lstm",
        )
        # A bidirectional encoder's two final states per layer become the decoder's one (Luong/Bahdanau
        # use the same kind of bridge); c, unbounded, gets no tanh.
        self.bridge_h = nn.Linear(2 * cfg.units, cfg.units) if self.bidirectional else None
        self.bridge_c = (
            nn.Linear(2 * cfg.units, cfg.units) if self.bidirectional and self.lstm else None
        )

    def _join(self, s: torch.Tensor, bridge: nn.Linear | None, squash: bool) -> torch.Tensor:
        if bridge is None:
            return s
        both = s.view(
            self.layers, 2, *s.shape[1:]
        )  # (layers * directions, B, U) -> (layers, 2, B, U)
        joined = bridge(torch.cat([both[:, 0], both[:, 1]], dim=-1))
        return torch.tanh(joined) if squash else joined

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """(memory (B, L, D), the decoder's initial state)."""
        memory, state = self.rnn(self.embedding(x))
        if self.lstm:
            h, c = state
            return memory, (self._join(h, self.bridge_h, True), self._join(c, self.bridge_c, False))
        return memory, self._join(state, self.bridge_h, True)


class Decoder(nn.Module):
    def __init__(self, cfg: Seq2SeqSpec, vocabulary: int, memory_dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocabulary + 1, cfg.embedding_dim)  # + the start token
        self.rnn = _rnn(cfg.cell)(cfg.embedding_dim, cfg.units, cfg.num_layers, batch_first=True)
        # Luong "general": score(h_t, h_s) = h_t . (W_a h_s); attentional state tanh(W_c [c_t; h_t]).
        self.score = nn.Linear(memory_dim, cfg.units, bias=False) if cfg.attention else None
        self.combine = nn.Linear(memory_dim + cfg.units, cfg.units) if cfg.attention else None
        self.out = nn.Linear(cfg.units, vocabulary)

    def keys(self, memory: torch.Tensor) -> torch.Tensor | None:
        return None if self.score is None else self.score(memory)

    def forward(
        self, tokens: torch.Tensor, state: Any, memory: torch.Tensor, keys: torch.Tensor | None
    ) -> tuple[torch.Tensor, Any]:
        """tokens (B, T) -> logits (B, T, V) and the state after them."""
        h, state = self.rnn(self.embedding(tokens), state)
        if keys is not None and self.combine is not None:
            weights = torch.softmax(h @ keys.transpose(1, 2), dim=-1)  # (B, T, L)
            h = torch.tanh(self.combine(torch.cat([weights @ memory, h], dim=-1)))
        return self.out(h), state


class Seq2Seq(nn.Module):
    def __init__(
        self, cfg: Seq2SeqSpec, input_vocabulary: int, vocabulary: int, output_length: int
    ) -> None:
        super().__init__()
        self.encoder = Encoder(cfg, input_vocabulary)
        self.decoder = Decoder(cfg, vocabulary, cfg.units * (2 if cfg.bidirectional_encoder else 1))
        self.input_vocabulary, self.vocabulary, self.output_length = (
            input_vocabulary,
            vocabulary,
            output_length,
        )
        if cfg.cell == "lstm":  # Keras' unit_forget_bias: start with the forget gates open
            for rnn in (self.encoder.rnn, self.decoder.rnn):
                for name, p in rnn.named_parameters():
                    if name.startswith("bias_ih"):
                        p.data[p.shape[0] // 4 : p.shape[0] // 2] = 1.0

    @property
    def start_token(self) -> int:
        return self.vocabulary

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: the decoder reads the start token then y[:, :-1]; logits (B, T, V)."""
        memory, state = self.encoder(x)
        start = torch.full((len(y), 1), self.start_token, dtype=y.dtype, device=y.device)
        logits, _ = self.decoder(
            torch.cat([start, y[:, :-1]], dim=1), state, memory, self.decoder.keys(memory)
        )
        return logits

    def greedy(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Free-running decoding, each step fed the previous argmax: (tokens (B, T), logits (B, T, V))."""
        memory, state = self.encoder(x)
        keys = self.decoder.keys(memory)
        token = torch.full((len(x), 1), self.start_token, dtype=torch.long, device=x.device)
        tokens, logits = [], []
        for _ in range(self.output_length):
            step, state = self.decoder(token, state, memory, keys)
            token = step.argmax(dim=-1)
            tokens.append(token)
            logits.append(step)
        return torch.cat(tokens, dim=1), torch.cat(logits, dim=1)


def config(spec: JobSpec) -> Seq2SeqSpec:
    return as_family(spec, Seq2SeqJob).seq2seq


def sizes(spec: JobSpec, info: DataInfo) -> tuple[int, int, int, int]:
    """(input_length, output_length, input_vocabulary, vocabulary) of a token dataset."""
    if info.num_classes is None or len(info.input_shape) != 1:
        raise SpecError(
            f"seq2seq needs token sequences (x of shape (N, L)) and token targets; this dataset has "
            f"samples of shape {list(info.input_shape)} and {info.task} targets",
            ("dataset",),
        )
    vocabulary = info.num_classes
    return (
        info.input_shape[0],
        info.target_dim,
        config(spec).input_vocabulary or vocabulary,
        vocabulary,
    )


def build(spec: JobSpec, info: DataInfo) -> Seq2Seq:
    _, output_length, input_vocabulary, vocabulary = sizes(spec, info)
    return Seq2Seq(config(spec), input_vocabulary, vocabulary, output_length)


def check(spec: JobSpec, info: DataInfo) -> None:
    """What the dry run refuses before queuing, each with the field at fault."""
    name = spec.dataset.name
    if name is not None and name not in TOKEN_DATASETS:
        raise SpecError(
            f"seq2seq maps token sequences to token sequences; {name!r} is not such a dataset: "
            f"use one of {list(TOKEN_DATASETS)}, {UPLOAD_HINT}",
            ("dataset", "name"),
        )
    where = ("dataset", "id") if name is None else ("dataset", "name")
    if info.task != "classification" or info.num_classes is None:
        raise SpecError(
            f"seq2seq targets are token ids (integers); this dataset's are {info.task} targets: "
            f"{UPLOAD_HINT} (task classification)",
            where,
        )
    if len(info.input_shape) != 1:
        raise SpecError(
            f"seq2seq inputs are token sequences of shape (L,); this dataset's samples are "
            f"{list(info.input_shape)}: {UPLOAD_HINT}",
            where,
        )
    if info.target_dim < 2:
        raise SpecError(
            "seq2seq targets are token sequences (y of shape (N, L_out), L_out >= 2); this dataset "
            f"has one class id per sample: {UPLOAD_HINT}",
            where,
        )
    if spec.dataset.standardize:
        raise SpecError(
            "token ids are never standardised; leave dataset.standardize unset",
            ("dataset", "standardize"),
        )
    c = spec.compiled
    if c.loss != "sparse_categorical_crossentropy":
        raise SpecError(
            f"seq2seq is trained with sparse_categorical_crossentropy (one target id per step), not {c.loss}",
            ("compile", "loss"),
        )
    wrong = [m for m in c.metrics if m != "accuracy"]
    if wrong:
        raise SpecError(
            f"seq2seq reports token_accuracy and sequence_accuracy (and `accuracy`, the token "
            f"accuracy, if listed); {wrong} do not apply to token ids",
            ("compile", "metrics"),
        )


def _summary(model: Seq2Seq, length: int) -> list[dict[str, Any]]:
    """One row per part, with one sample's output shape; parts a spec leaves out are not listed."""
    e, d, steps = model.encoder, model.decoder, model.output_length
    rows: list[tuple[str, list[nn.Module | None], Shape]] = [
        ("encoder.embedding", [e.embedding], (length, e.embedding.embedding_dim)),
        (
            f"encoder.{e.rnn.mode.lower()}",
            [e.rnn],
            (length, e.rnn.hidden_size * (2 if e.bidirectional else 1)),
        ),
        ("encoder.bridge", [e.bridge_h, e.bridge_c], (e.rnn.num_layers, e.rnn.hidden_size)),
        ("decoder.embedding", [d.embedding], (steps, d.embedding.embedding_dim)),
        (f"decoder.{d.rnn.mode.lower()}", [d.rnn], (steps, d.rnn.hidden_size)),
        ("decoder.attention", [d.score, d.combine], (steps, d.rnn.hidden_size)),
        ("decoder.dense", [d.out], (steps, model.vocabulary)),
    ]
    out: list[dict[str, Any]] = []
    for name, modules, shape in rows:
        present = [m for m in modules if m is not None]
        if present:
            params = sum(p.numel() for m in present for p in m.parameters())
            out.append(
                {"index": len(out), "type": name, "output_shape": list(shape), "parameters": params}
            )
    return out


def dry_run(spec: JobSpec, info: DataInfo) -> DryRun:
    check(spec, info)
    model = build(spec, info)
    length, steps, input_vocabulary, vocabulary = sizes(spec, info)
    x = torch.arange(2 * length).remainder(input_vocabulary).view(2, length)
    y = torch.arange(2 * steps).remainder(vocabulary).view(2, steps)
    logits = model(x, y)
    F.cross_entropy(logits.reshape(-1, vocabulary), y.reshape(-1)).backward()
    with torch.no_grad():
        model.greedy(x)  # the decoding loop predict runs
    parameters = sum(p.numel() for p in model.parameters())
    # Weights, gradients and optimizer slots, plus per-step activations kept for backward.
    units = config(spec).units * (2 if config(spec).bidirectional_encoder else 1)
    per_sample = (length + steps) * (
        config(spec).embedding_dim + 6 * units * config(spec).num_layers
    )
    per_sample += steps * (length + 2 * vocabulary)
    memory = (
        parameters * 4 * (2 + optimizer_slots(spec.compiled.optimizer))
        + 4 * per_sample * spec.fit.batch_size
    )
    return DryRun(
        parameters=parameters,
        output_shape=(steps, vocabulary),
        layers=_summary(model, length),
        estimated_memory_bytes=int(memory),
    )


# -- predict ---------------------------------------------------------------------------------
def _sequences(instances: Any, length: int, vocabulary: int) -> list[list[int]]:
    want = f"each instance must be a list of {length} token ids, integers in 0..{vocabulary - 1}"
    if not isinstance(instances, list) or not instances:
        raise PredictError(f"give a non-empty list of instances; {want}")
    for i, row in enumerate(instances):
        if not isinstance(row, list) or len(row) != length:
            got = f"{len(row)} values" if isinstance(row, list) else type(row).__name__
            raise PredictError(f"{want}; instance {i} has {got}")
        for t in row:
            # bool is an int in Python, and 3.0 is a float a JSON client may send for 3
            ok = (
                isinstance(t, int | float)
                and not isinstance(t, bool)
                and abs(t) < 2**53
                and t == int(t)
            )
            if not ok or not 0 <= int(t) < vocabulary:
                raise PredictError(f"{want}; instance {i} has {t!r}")
    return [[int(t) for t in row] for row in instances]


def predict(model: FamilyModel, req: OperationRequest) -> dict[str, Any]:
    """Greedy decoding of each token sequence: {"predictions": [[id, ...], ...]}."""
    net: Seq2Seq = model.module  # type: ignore[assignment]
    refuse_unused(req, "predict", ("instances",))
    if req.instances is None:
        raise PredictError("give `instances`: token-id sequences to decode")
    rows = _sequences(req.instances, model.info.input_shape[0], net.input_vocabulary)
    x = torch.tensor(rows, dtype=torch.long, device=model.device)
    tokens, _ = net.greedy(x)
    return {"predictions": tokens.cpu().tolist()}


OPERATIONS: dict[str, Operation] = {"predict": predict}
