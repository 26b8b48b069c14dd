"""Deterministic "formula weights": every tensor derived from its key, shape and a seed.

The compatibility goldens were produced by the reference implementation with
weights from this rule, so the project can rebuild the exact same models
without shipping any weight file.  The demo voice and the benchmarks use the
same rule with their own seeds.  The rule itself is public and normative (it
is stated in the golden folder's README); this is an independent rewrite.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping

import numpy as np
import torch
from torch import Tensor

from engines.speaker.loading import official_key_shapes


def named_rng(seed: int, name: str) -> np.random.Generator:
    """numpy PCG64 seeded by `[seed, crc32(name)]`, as the goldens' inputs are."""
    return np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])


def rule_for(key: str, shape: tuple[int, ...]) -> str:
    """Name of the formula rule that applies to `key` (first match wins)."""
    if key.endswith("._codebook.inited"):
        return "inited_one"
    if key.endswith("bias") or key.endswith("beta"):
        return "bias"
    if len(shape) <= 1 and key.endswith(("weight", "gamma", "alpha")):
        return "gain"
    if "._codebook." in key:
        return "codebook"
    if key.endswith("word_embeddings.weight"):
        return "embedding"
    if key.endswith(("self_attn.out_proj.weight", "linear2.weight")):
        return "residual_out"
    if len(shape) >= 2:
        return "matrix"
    return "plain"


def formula_array(key: str, shape: Iterable[int], seed: int) -> np.ndarray:
    """The float32 value of one tensor; float64 arithmetic, one final rounding."""
    shape = tuple(int(s) for s in shape)
    x = named_rng(seed, key).standard_normal(shape)
    rule = rule_for(key, shape)
    fan_in = float(np.prod(shape[1:])) if len(shape) >= 1 else 1.0
    if rule == "inited_one":
        v = np.ones(shape, dtype=np.float64)
    elif rule == "bias":
        v = 0.02 * x
    elif rule == "gain":
        v = 1.0 + 0.05 * x
    elif rule == "residual_out":
        v = 0.25 * x / np.sqrt(fan_in)
    elif rule == "matrix":
        v = x / np.sqrt(fan_in)
    else:  # codebook, embedding, plain
        v = x
    return v.astype(np.float32)


def formula_state_dict(shapes: Mapping[str, Iterable[int]], seed: int) -> dict[str, torch.Tensor]:
    """A float32 state dict with a formula value for every `key -> shape`."""
    return {k: torch.from_numpy(formula_array(k, s, seed)) for k, s in shapes.items()}


def formula_speaker_state_dict(seed: int) -> dict[str, Tensor]:
    """Deterministic stand-in weights (the project's formula rule) for tests and demos.

    Two departures from the plain rule, both to keep BatchNorm meaningful:
    running variances (which the rule would draw from N(0, 1), negatives included)
    get `1 + 0.05 x`, like gains; the integer batch counters stay 0.
    """
    out: dict[str, Tensor] = {}
    for key, shape in official_key_shapes().items():
        if key.endswith(".num_batches_tracked"):
            out[key] = torch.zeros((), dtype=torch.long)
            continue
        value = formula_array(key, shape, seed)
        if key.endswith(".running_var"):
            value = (1.0 + 0.05 * value.astype(np.float64)).astype(np.float32)
        out[key] = torch.from_numpy(value)
    return out
