"""The BERT encoder in plain torch: the few layers the kiosk runs, read from a model folder.

The GPT stage needs one thing of chinese-roberta-wwm-ext-large: the hidden
states of its third-to-last layer.  That is a fixed, textbook encoder
(embeddings, then post-norm self-attention blocks), so it is written here
instead of being built by transformers, whose import alone takes 2-5 s of a
box's boot and pulls in most of its model zoo.  The parameters keep
transformers' names, so the official checkpoints load as they are: the
`BertForMaskedLM` file the reference ships (`bert.` prefix, masked-LM head
ignored), a plain `BertModel` file, fp16 or fp32, `.bin` or `.safetensors`,
sharded or not, and the old TensorFlow-era `gamma`/`beta` norm names.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

#: Activation names of config.json this encoder implements.
ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}
#: Prefixes a checkpoint may put before the encoder's own names.
KEY_PREFIXES = ("bert.", "roberta.")
#: Checkpoint entries that are not encoder weights (heads, the pooler, buffers).
IGNORED_PREFIXES = ("cls.", "pooler.", "lm_head.", "embeddings.position_ids")


class BertWeightsError(ValueError):
    """A model folder whose config or weights do not make this encoder (the message says why)."""


@dataclass(frozen=True)
class BertShape:
    """The sizes config.json gives; everything the encoder is built from."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_positions: int
    type_vocab_size: int
    layer_norm_eps: float
    activation: str

    @classmethod
    def from_config(cls, config: Mapping[str, object]) -> BertShape:
        """Read config.json's keys (transformers' names), refusing what this encoder lacks."""

        def number(key: str, default: object = None) -> int:
            value = config.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise BertWeightsError(
                    f"config.json: {key} must be a positive integer, not {value!r}"
                )
            return value

        activation = str(config.get("hidden_act", "gelu"))
        if activation not in ACTIVATIONS:
            raise BertWeightsError(
                f"config.json: hidden_act {activation!r} is not supported "
                f"(supported: {', '.join(ACTIVATIONS)})"
            )
        position = config.get("position_embedding_type", "absolute")
        if position != "absolute":
            raise BertWeightsError(
                f"config.json: position_embedding_type {position!r} is not supported (absolute)"
            )
        shape = cls(
            vocab_size=number("vocab_size"),
            hidden_size=number("hidden_size"),
            num_layers=number("num_hidden_layers"),
            num_heads=number("num_attention_heads"),
            intermediate_size=number("intermediate_size"),
            max_positions=number("max_position_embeddings", 512),
            type_vocab_size=number("type_vocab_size", 2),
            layer_norm_eps=float(config.get("layer_norm_eps", 1e-12)),  # type: ignore[arg-type]
            activation=activation,
        )
        if shape.hidden_size % shape.num_heads:
            raise BertWeightsError(
                f"config.json: hidden_size {shape.hidden_size} is not a multiple of "
                f"num_attention_heads {shape.num_heads}"
            )
        return shape


#: Modules are built without storage (and without random initialisation, which for
#: chinese-roberta's 300 M weights alone took seconds); the checkpoint's own tensors
#: are then assigned to them, without a copy where the file is memory-mapped.
META = torch.device("meta")


def _embedding(rows: int, width: int) -> nn.Embedding:
    # Given a weight, nn.Embedding skips its initialiser (whose meta kernel is slow to load).
    return nn.Embedding(rows, width, _weight=torch.empty(rows, width, device=META))


class _Embeddings(nn.Module):
    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        self.word_embeddings = _embedding(shape.vocab_size, shape.hidden_size)
        self.position_embeddings = _embedding(shape.max_positions, shape.hidden_size)
        self.token_type_embeddings = _embedding(shape.type_vocab_size, shape.hidden_size)
        self.norm = nn.LayerNorm(shape.hidden_size, eps=shape.layer_norm_eps, device=META)

    def forward(self, ids: Tensor) -> Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.word_embeddings(ids) + self.position_embeddings(positions)[None]
        # One sentence: every token is of type 0, as the reference's tokenizer call gives.
        x = x + self.token_type_embeddings.weight[0]
        return self.norm(x)


class _Layer(nn.Module):
    """Self-attention and feed-forward, each added back and then normalised (post-norm)."""

    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        d = shape.hidden_size
        self.heads = shape.num_heads
        eps = shape.layer_norm_eps
        self.query = nn.Linear(d, d, device=META)
        self.key = nn.Linear(d, d, device=META)
        self.value = nn.Linear(d, d, device=META)
        self.attention_out = nn.Linear(d, d, device=META)
        self.attention_norm = nn.LayerNorm(d, eps=eps, device=META)
        self.intermediate = nn.Linear(d, shape.intermediate_size, device=META)
        self.output = nn.Linear(shape.intermediate_size, d, device=META)
        self.output_norm = nn.LayerNorm(d, eps=eps, device=META)
        self.activation = ACTIVATIONS[shape.activation]

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        h = self.heads

        def split(y: Tensor) -> Tensor:
            return y.view(b, t, h, d // h).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        # One unpadded sentence: no mask; the default scale is 1/sqrt(head size).
        context = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, d)
        x = self.attention_norm(x + self.attention_out(context))
        return self.output_norm(x + self.output(self.activation(self.intermediate(x))))


class BertEncoder(nn.Module):
    """Token ids [1, T] -> the hidden states after the first `num_layers` layers [1, T, D].

    Built empty (on the meta device): `load_encoder` gives it its weights.
    """

    def __init__(self, shape: BertShape, num_layers: int) -> None:
        super().__init__()
        if not 0 <= num_layers <= shape.num_layers:
            raise BertWeightsError(f"{num_layers} layers asked of a {shape.num_layers}-layer BERT")
        self.shape = shape
        self.embeddings = _Embeddings(shape)
        self.layers = nn.ModuleList(_Layer(shape) for _ in range(num_layers))

    def forward(self, ids: Tensor) -> Tensor:
        x = self.embeddings(ids)
        for layer in self.layers:
            x = layer(x)
        return x


# ------------------------------------------------------------------------ reading a folder

#: transformers' parameter names (after the prefix) -> ours, for one layer.
_LAYER_NAMES = {
    "attention.self.query": "query",
    "attention.self.key": "key",
    "attention.self.value": "value",
    "attention.output.dense": "attention_out",
    "attention.output.LayerNorm": "attention_norm",
    "intermediate.dense": "intermediate",
    "output.dense": "output",
    "output.LayerNorm": "output_norm",
}


def _our_name(key: str) -> str | None:
    """Our parameter name for a checkpoint key (None: not an encoder weight)."""
    for prefix in KEY_PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix) :]
            break
    if key.startswith(IGNORED_PREFIXES):
        return None
    key = key.replace(".gamma", ".weight").replace(".beta", ".bias")
    if key.startswith("embeddings."):
        return key.replace("embeddings.LayerNorm.", "embeddings.norm.")
    if key.startswith("encoder.layer."):
        index, rest = key[len("encoder.layer.") :].split(".", 1)
        module, _, leaf = rest.rpartition(".")
        if module in _LAYER_NAMES:
            return f"layers.{index}.{_LAYER_NAMES[module]}.{leaf}"
    return key  # unknown: reported as unexpected


def read_state(folder: Path) -> dict[str, Tensor]:
    """The checkpoint's tensors, from whichever of the standard weight files the folder has."""
    single = [folder / "model.safetensors", folder / "pytorch_model.bin"]
    for path in single:
        if path.is_file():
            return _read_file(path)
    for index in (folder / "model.safetensors.index.json", folder / "pytorch_model.bin.index.json"):
        if index.is_file():
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            shards = sorted(set(weight_map.values()))
            state: dict[str, Tensor] = {}
            for shard in shards:
                state.update(_read_file(folder / shard))
            return state
    raise BertWeightsError("no weights file (model.safetensors or pytorch_model.bin)")


def _read_file(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:  # a zip checkpoint maps instead of reading 1.3 GB up front
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # the legacy (non-zip) format cannot be mapped
        return torch.load(path, map_location="cpu", weights_only=True)


def load_encoder(folder: Path, drop_last: int = 0) -> BertEncoder:
    """The folder's BERT without its last `drop_last` layers, float32, in eval mode.

    Every tensor the kept layers need must be in the checkpoint with the right
    shape: a partial or foreign file is refused, never filled with random
    values.  Weights of the dropped layers and of heads are ignored.
    """
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    shape = BertShape.from_config(config)
    keep_layers = shape.num_layers - drop_last
    if keep_layers < 0:
        raise BertWeightsError(
            f"{shape.num_layers} layers, but the {drop_last} last are dropped (the output used "
            f"is hidden_states[-{drop_last + 1}])"
        )
    encoder = BertEncoder(shape, keep_layers)
    wanted = encoder.state_dict()
    found: dict[str, Tensor] = {}
    unexpected: list[str] = []
    for key, tensor in read_state(folder).items():
        name = _our_name(key)
        if name is None:
            continue
        if name.startswith("layers.") and int(name.split(".")[1]) >= keep_layers:
            continue  # a layer after the one whose output is used
        if name not in wanted:
            unexpected.append(key)
            continue
        found[name] = tensor
    missing = sorted(set(wanted) - set(found))
    mismatched = sorted(n for n, t in found.items() if tuple(t.shape) != tuple(wanted[n].shape))
    if missing or mismatched or unexpected:
        shown = ", ".join((missing + mismatched + unexpected)[:5])
        raise BertWeightsError(
            f"the weights do not fit the architecture ({len(missing)} missing, "
            f"{len(mismatched)} mismatched, {len(unexpected)} unknown tensors, e.g. {shown})"
        )
    encoder.load_state_dict({n: t.float() for n, t in found.items()}, assign=True)
    encoder.eval()
    encoder.requires_grad_(False)
    return encoder


__all__ = ["BertEncoder", "BertShape", "BertWeightsError", "load_encoder", "read_state"]
