"""Per-step token choice, step for step as the reference inference loop does it.

The order matters and is not the textbook one: the repetition penalty comes
first and its result also drives the stop test; top-p runs before the
temperature; top-k after it.  Randomness comes only from the generator
passed in, so a seeded generator reproduces a run exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# The reference hides EOS for the first 11 steps, so an utterance has >= 11 tokens.
EOS_SUPPRESSED_STEPS = 11

_MIN_TEMPERATURE = 1e-5


@dataclass(frozen=True)
class SamplingParams:
    """User-facing sampling knobs; defaults are the reference app's."""

    top_k: int = 15
    top_p: float = 1.0
    temperature: float = 1.0
    repetition_penalty: float = 1.35

    def __post_init__(self) -> None:
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 1:
            raise ValueError(f"top_k must be an integer >= 1, got {self.top_k!r}")
        if not (math.isfinite(self.top_p) and 0.0 < self.top_p <= 1.0):
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not (math.isfinite(self.temperature) and self.temperature >= 0.0):
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature!r}")
        if not (math.isfinite(self.repetition_penalty) and self.repetition_penalty > 0.0):
            raise ValueError(
                f"repetition_penalty must be a finite number > 0, got {self.repetition_penalty!r}"
            )


@dataclass(frozen=True)
class SampleResult:
    """Outcome of one step: the drawn token and the reference's two stop signals."""

    token: torch.Tensor  # [B, 1] int64
    argmax_is_eos: torch.Tensor  # [B] bool, argmax of the penalised logits
    penalised_logits: torch.Tensor  # [B, V'] (V' = V - 1 while EOS is suppressed)


def apply_repetition_penalty(
    logits: torch.Tensor, previous_tokens: torch.Tensor, penalty: float
) -> torch.Tensor:
    """Penalise every distinct token of `previous_tokens` once, in place; returns `logits`.

    Gather-then-scatter reads the original score for every occurrence, so a
    token seen many times is still penalised exactly once.
    """
    if previous_tokens.shape[-1] == 0:
        return logits
    index = previous_tokens.long()
    score = torch.gather(logits, 1, index)
    score = torch.where(score < 0, score * penalty, score / penalty)
    return logits.scatter_(1, index, score)


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Hide tokens whose cumulative probability (sorted, inclusive) exceeds `top_p`.

    As in the reference, the token that crosses the threshold is dropped too;
    only the most likely token is always kept.
    """
    if top_p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    cumulative = torch.cumsum(torch.softmax(sorted_logits, dim=-1), dim=-1)
    drop_sorted = cumulative > top_p
    drop_sorted[:, 0] = False
    drop = drop_sorted.scatter(1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def top_k_filter(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """Hide everything below the k-th largest value (ties with it survive)."""
    kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
    return torch.where(logits < kth, torch.full_like(logits, float("-inf")), logits)


def draw(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """argmax(probs / Exp(1) noise): a multinomial draw without a device sync."""
    noise = torch.empty_like(probs).exponential_(1.0, generator=generator)
    return torch.argmax(probs / noise, dim=-1, keepdim=True)


def sample_next(
    logits: torch.Tensor,
    previous_tokens: torch.Tensor,
    step: int,
    params: SamplingParams,
    generator: torch.Generator | None,
    eos_id: int,
    *,
    suppress_eos: bool | None = None,
) -> SampleResult:
    """Choose the token of decoding step `step` from raw logits `[B, V]`.

    `previous_tokens` `[B, T]` is the whole history: prompt semantic tokens and
    the tokens generated so far.  `logits` is not modified.
    """
    if eos_id != logits.shape[-1] - 1:
        raise ValueError("EOS must be the last logit column")
    work = logits.float()
    # (1) no EOS before step 11: drop the column, indices of the rest are unchanged.
    if suppress_eos is None:
        suppress_eos = step < EOS_SUPPRESSED_STEPS
    work = work[:, :-1].clone() if suppress_eos else work.clone()
    # (2) repetition penalty; its output is also what the stop test looks at.
    penalised = apply_repetition_penalty(work, previous_tokens, params.repetition_penalty)
    argmax_is_eos = penalised.argmax(dim=-1) == eos_id
    # (3) top-p, (4) temperature, (5) top-k, (6) softmax + exponential race.
    filtered = top_p_filter(penalised, params.top_p)
    filtered = filtered / max(params.temperature, _MIN_TEMPERATURE)
    filtered = top_k_filter(filtered, params.top_k)
    token = draw(torch.softmax(filtered, dim=-1), generator)
    return SampleResult(token=token, argmax_is_eos=argmax_is_eos, penalised_logits=penalised)
