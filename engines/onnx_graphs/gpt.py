"""GPT graphs: prefill (dynamic lengths) and one decode step over a static KV cache.

Cache layout on the host: `[layers, 1, heads, max_len, head_dim]`, as `KVCache`;
the decode graph takes it as one `[1, heads, max_len, head_dim]` input per layer
(contiguous views of the host tensor, bound without a copy).

Design of the decode step.  The graph *reads* the caches and returns only the
new key/value rows (`[layers, 1, heads, 1, head_dim]`); the host writes those
rows into slot `slot` after the step.  The alternatives are worse: returning
updated caches forces either a full cache copy per step (ORT and TensorRT do not
alias an input with an output) or ping-pong buffers that still rewrite the whole
cache, while a 48 KB row write is negligible.  Inside the graph the new row is
not scattered into the cache either: attention scores are computed against the
cache (slots `>= slot` hidden by the mask) and against the new key separately,
and the two are joined only at the `[.., max_len + 1]` score level, so no
cache-sized tensor is ever copied.  This is the same softmax over the same set
of keys as the eager model, only summed in another order (float rounding).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engines.gpt.layers import DecoderLayer, attend
from engines.gpt.model import Text2SemanticModel, prefill_bias

_HIDDEN = float("-inf")


def _qkv(layer: DecoderLayer, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """`[1, T, D]` -> q, k, v as `[1, H, T, Dh]`."""
    attn = layer.self_attn
    q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    return attn._split_heads(q), attn._split_heads(k), attn._split_heads(v)


def _finish_layer(layer: DecoderLayer, x: Tensor, attended: Tensor) -> Tensor:
    """Output projection, residuals, post-LNs and FFN: `DecoderLayer.forward` after attention."""
    batch, _, length, _ = attended.shape
    out = layer.self_attn.out_proj(attended.transpose(1, 2).reshape(batch, length, -1))
    x = layer.norm1(x + out)
    return layer.norm2(x + layer.linear2(F.relu(layer.linear1(x))))


class GPTPrefillGraph(nn.Module):
    """`phone_ids [1,N]`, `bert [1,1024,N]`, `prompt [1,P]` -> logits `[1,V]`, keys, values.

    Keys/values are `[layers, 1, heads, N+P, head_dim]`: the runtime copies them
    into slots `0..N+P-1` of its static cache (once per utterance).
    """

    input_names = ("phone_ids", "bert", "prompt")
    output_names = ("logits", "keys", "values")

    def __init__(self, model: Text2SemanticModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, phone_ids: Tensor, bert: Tensor, prompt: Tensor) -> tuple[Tensor, ...]:
        m = self.model
        x = torch.cat([m.embed_text(phone_ids, bert), m.embed_audio(prompt)], dim=1)
        total = x.shape[1]
        bias = prefill_bias(phone_ids.shape[1], total, total, x.device)
        keys, values = [], []
        for layer in m.h.layers:
            q, k, v = _qkv(layer, x)
            keys.append(k)
            values.append(v)
            x = _finish_layer(layer, x, attend(q, k, v, bias))
        return m.logits(x[:, -1]), torch.stack(keys), torch.stack(values)


def cache_input_names(num_layers: int) -> tuple[str, ...]:
    """Decode-graph cache inputs, one key and one value tensor per layer, in layer order."""
    return tuple(f"{kind}_cache_{i}" for i in range(num_layers) for kind in ("k", "v"))


def _dense(x: Tensor, linear_weight: Tensor, bias: Tensor | None) -> Tensor:
    """`x @ W.T + b` as a plain MatMul on a constant (folded) transposed weight.

    A MatMul rather than Gemm, so weight-only quantisers (which rewrite MatMul
    nodes) see every projection.
    """
    out = torch.matmul(x, linear_weight.t())
    return out if bias is None else out + bias


class GPTDecodeGraph(nn.Module):
    """One decode step over a read-only static cache; see the module docstring.

    Inputs: `token [1,1]`, `position [1]` (audio position), `slot [1]` (cache
    slot of this token), then `k_cache_<i>`, `v_cache_<i>` `[1,heads,max_len,head_dim]`
    for every layer `i` (one tensor per layer, so no runtime has to split a
    stacked cache, which costs a full cache copy per step in ONNX Runtime).
    Cache slots `>= slot` are hidden (they hold stale data or nothing yet); the
    token itself is attended through its own new key/value.
    Outputs: `logits [1,V]`, `new_k`, `new_v` `[layers,1,heads,1,head_dim]`.

    The step works on `[1, D]` rows with constant reshapes, which keeps the
    graph to about thirty nodes per layer.
    """

    scalar_inputs = ("token", "position", "slot")
    output_names = ("logits", "new_k", "new_v")

    def __init__(self, model: Text2SemanticModel) -> None:
        super().__init__()
        self.model = model
        self.input_names = (*self.scalar_inputs, *cache_input_names(model.config.num_layers))

    def forward(
        self, token: Tensor, position: Tensor, slot: Tensor, *caches: Tensor
    ) -> tuple[Tensor, ...]:
        m = self.model
        cfg = m.config
        heads, head_dim = cfg.num_heads, cfg.head_dim
        dim = heads * head_dim
        x = m.embed_audio(token, position).reshape(1, dim)
        max_len = caches[0].shape[2]
        cols = torch.arange(max_len, device=token.device)
        cache_bias = torch.zeros(max_len, device=token.device).masked_fill(cols >= slot, _HIDDEN)
        scale = 1.0 / math.sqrt(head_dim)
        new_keys, new_values = [], []
        for i, layer in enumerate(m.h.layers):
            k_cache, v_cache = caches[2 * i], caches[2 * i + 1]
            attn = layer.self_attn
            q, k, v = _dense(x, attn.in_proj_weight, attn.in_proj_bias).split(dim, dim=-1)
            q = (q * scale).reshape(1, heads, 1, head_dim)
            k = k.reshape(1, heads, 1, head_dim)
            v = v.reshape(1, heads, 1, head_dim)
            cached = torch.matmul(q, k_cache.transpose(-2, -1)) + cache_bias
            own = (q * k).sum(dim=-1, keepdim=True)
            weights = torch.softmax(torch.cat([cached, own], dim=-1), dim=-1)
            attended = torch.matmul(weights[..., :max_len], v_cache) + weights[..., max_len:] * v
            out = _dense(attended.reshape(1, dim), attn.out_proj.weight, attn.out_proj.bias)
            x = layer.norm1(x + out)
            hidden = F.relu(_dense(x, layer.linear1.weight, layer.linear1.bias))
            x = layer.norm2(x + _dense(hidden, layer.linear2.weight, layer.linear2.bias))
            new_keys.append(k)
            new_values.append(v)
        return m.logits(x), torch.stack(new_keys), torch.stack(new_values)
