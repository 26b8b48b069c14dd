"""Reduced-precision policy for the GPT stage, and the FP16-vs-FP32 token check.

Another port saw FP16 GPT decoding emit EOS after ~11 tokens (spec §7).  The
policy here therefore keeps in float32 exactly the parts that decide tokens:

* every LayerNorm (statistics over 512 values overflow/lose bits in FP16),
* the attention softmax (already float32 in `engines.gpt.layers.attend`;
  the q·k products accumulate in FP32 inside cuBLAS, see `configure_cuda_matmul`),
* the final logits projection (`ar_predict_layer`), whose output feeds sampling.

Everything else (embeddings, QKV/FFN projections, KV cache) runs in the
reduced dtype.  The policy is plain torch, so it also runs on the CPU with
float16 or bfloat16, which is how the tests check its numerics without a GPU.
`compare_greedy` is the acceptance test every reduced-precision runtime
(torch-CUDA FP16, TensorRT FP16 engines) must pass against the FP32 reference.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from engines.gpt.config import GPTConfig
from engines.gpt.decoding import generate
from engines.gpt.model import Text2SemanticModel
from engines.gpt.runtime import GPTRuntime
from engines.gpt.sampling import SamplingParams

log = logging.getLogger(__name__)

#: Greedy decoding for comparisons: argmax, no repetition penalty, no randomness.
GREEDY = SamplingParams(top_k=1, top_p=1.0, temperature=1.0, repetition_penalty=1.0)


class FP32LayerNorm(nn.LayerNorm):
    """LayerNorm whose parameters and arithmetic stay float32 inside a half model.

    Returns the input's dtype so the surrounding reduced-precision layers are
    unaffected.  Being a `LayerNorm` subclass keeps state-dict keys unchanged.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.layer_norm(
            x.float(), self.normalized_shape, self.weight.float(), self.bias.float(), self.eps
        )
        return out.to(x.dtype)


class FP32Linear(nn.Linear):
    """Linear computed in float32 and returning float32 (the logits projection)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.linear(x.float(), weight, bias)


def _fp32_norm(norm: nn.LayerNorm) -> FP32LayerNorm:
    twin = FP32LayerNorm(norm.normalized_shape, eps=norm.eps, device=norm.weight.device)
    twin.load_state_dict({k: v.float() for k, v in norm.state_dict().items()})
    return twin


def _fp32_linear(linear: nn.Linear) -> FP32Linear:
    twin = FP32Linear(
        linear.in_features,
        linear.out_features,
        bias=linear.bias is not None,
        device=linear.weight.device,
    )
    twin.load_state_dict({k: v.float() for k, v in linear.state_dict().items()})
    return twin


@dataclass(frozen=True)
class PrecisionPolicy:
    """Which dtype a GPT runs in, and what stays float32 regardless."""

    dtype: torch.dtype = torch.float16
    fp32_layer_norm: bool = True
    fp32_logits: bool = True

    @property
    def is_reduced(self) -> bool:
        return self.dtype != torch.float32

    @property
    def label(self) -> str:
        return {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}.get(
            self.dtype, str(self.dtype)
        )


FP32 = PrecisionPolicy(torch.float32)


def apply_gpt_policy(
    model: Text2SemanticModel,
    policy: PrecisionPolicy,
    device: torch.device | str | None = None,
) -> Text2SemanticModel:
    """A copy of `model` on `device` in `policy.dtype`, with the FP32 islands in place.

    The original model (the FP32 reference used for validation) is never modified.
    """
    converted = copy.deepcopy(model).eval()
    if device is not None:
        converted = converted.to(device)
    if not policy.is_reduced:
        return converted.float()
    converted = converted.to(policy.dtype)
    for layer in converted.h.layers:
        if policy.fp32_layer_norm:
            layer.norm1 = _fp32_norm(layer.norm1)
            layer.norm2 = _fp32_norm(layer.norm2)
    if policy.fp32_logits:
        converted.ar_predict_layer = _fp32_linear(converted.ar_predict_layer)
    return converted


def configure_cuda_matmul() -> None:
    """Make half-precision GEMMs reduce in FP32 (attention scores included).

    cuBLAS already accumulates FP16 GEMMs in FP32; PyTorch may still allow
    reduced-precision *split-K reductions*, which we turn off for the GPT.
    """
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False
        torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False


# --------------------------------------------------------------------- validation
@dataclass(frozen=True)
class ValidationCase:
    """One GPT input used to compare a candidate runtime against the FP32 reference."""

    phone_ids: torch.Tensor  # [N] int64
    bert: torch.Tensor  # [1024, N] float32
    prompt_tokens: torch.Tensor  # [P] int64


def default_validation_cases(
    config: GPTConfig, count: int = 2, seed: int = 1234
) -> list[ValidationCase]:
    """Deterministic synthetic inputs (phones, zero BERT as for non-Chinese text, prompt).

    A voice's own reference prompt is a better check; the build passes it when known.
    """
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for i in range(count):
        num_text, num_prompt = 12 + 7 * i, 20 + 10 * i
        phones = torch.randint(1, config.phoneme_vocab_size, (num_text,), generator=generator)
        prompt = torch.randint(0, config.eos_id, (num_prompt,), generator=generator)
        bert = torch.zeros(config.bert_dim, num_text)
        cases.append(ValidationCase(phones, bert, prompt))
    return cases


@dataclass
class GreedyComparison:
    """Outcome of comparing a candidate's greedy tokens with the reference's."""

    passed: bool
    reference_tokens: list[list[int]] = field(default_factory=list)
    candidate_tokens: list[list[int]] = field(default_factory=list)
    max_logit_diff: float = 0.0
    detail: str = ""

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly summary for the engine manifest."""
        return {
            "passed": self.passed,
            "detail": self.detail,
            "max_logit_diff": round(self.max_logit_diff, 6),
            "tokens_compared": sum(len(t) for t in self.reference_tokens),
        }


def greedy_run(
    runtime: Text2SemanticModel | GPTRuntime, case: ValidationCase, steps: int
) -> tuple[list[int], torch.Tensor, bool]:
    """Greedy tokens, per-step logits (float32, CPU) and whether it stopped on EOS."""
    result = generate(
        runtime,
        case.phone_ids,
        case.bert,
        case.prompt_tokens,
        GREEDY,
        None,
        max_new_tokens=steps,
        keep_diagnostics=True,
    )
    assert result.logits is not None
    return result.tokens.tolist(), result.logits, result.stopped_by_eos


def compare_greedy(
    reference: Text2SemanticModel | GPTRuntime,
    candidate: Text2SemanticModel | GPTRuntime,
    cases: list[ValidationCase],
    steps: int = 48,
) -> GreedyComparison:
    """Greedy tokens of `candidate` must equal the reference's, EOS included.

    A candidate that stops earlier (the FP16 failure seen elsewhere) or picks
    any other token fails; the logit difference is recorded for the log.
    """
    outcome = GreedyComparison(passed=True)
    for index, case in enumerate(cases):
        ref_tokens, ref_logits, ref_eos = greedy_run(reference, case, steps)
        cand_tokens, cand_logits, cand_eos = greedy_run(candidate, case, steps)
        outcome.reference_tokens.append(ref_tokens)
        outcome.candidate_tokens.append(cand_tokens)
        common = min(len(ref_logits), len(cand_logits))
        if common:
            diff = (ref_logits[:common] - cand_logits[:common]).abs().max().item()
            outcome.max_logit_diff = max(outcome.max_logit_diff, diff)
        if ref_tokens != cand_tokens or ref_eos != cand_eos:
            first = next(
                (
                    i
                    for i, (a, b) in enumerate(zip(ref_tokens, cand_tokens, strict=False))
                    if a != b
                ),
                min(len(ref_tokens), len(cand_tokens)),
            )
            outcome.passed = False
            outcome.detail = (
                f"case {index}: tokens differ from step {first} "
                f"(reference {len(ref_tokens)} tokens, eos={ref_eos}; "
                f"candidate {len(cand_tokens)} tokens, eos={cand_eos})"
            )
            return outcome
    outcome.detail = f"{len(cases)} case(s), greedy tokens identical"
    return outcome
