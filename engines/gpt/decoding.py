"""The autoregressive loop: prefill once, then one cached decode step per token.

Stop rules follow the reference's single-sequence loop: EOS (as the sampled
token or as the argmax of the penalised logits; the token of that step is
dropped), the `early_stop_num` length cap (the token that crosses it is kept)
and a hard cap of 1500 steps (the last token kept too).  The golden data
records that loop.

The official app's default engine (its batch path, `parallel_infer=True`)
uses the same steps but drops the token of the stopping step at the caps as
well, so it keeps at most `min(early_stop_num, 1499)` tokens;
`batch_token_cap` gives that number, and synthesis passes it as
`max_new_tokens` (with `early_stop_num=None`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .model import Text2SemanticModel
from .runtime import GPTRuntime, as_runtime
from .sampling import EOS_SUPPRESSED_STEPS, SamplingParams, sample_next

MAX_DECODE_STEPS = 1500


def batch_token_cap(early_stop_num: int | None) -> int:
    """Most tokens the official batch path keeps for a segment.

    It samples a token at every step, then stops once more than
    `early_stop_num` tokens exist, or at its 1500th step, and drops the token
    of the stopping step: `min(early_stop_num, 1499)` tokens survive.
    """
    cap = MAX_DECODE_STEPS - 1
    if early_stop_num is not None:
        if early_stop_num < 1:
            raise ValueError(f"early_stop_num must be >= 1, got {early_stop_num}")
        cap = min(cap, early_stop_num)
    return cap


@dataclass(frozen=True)
class DecodeResult:
    """Generated semantic tokens (EOS excluded) and how the loop ended."""

    tokens: torch.Tensor  # [T] int64, on CPU
    stopped_by_eos: bool
    steps: int  # model evaluations run (prefill counts as one)
    logits: torch.Tensor | None = None  # [steps, V] raw logits, if requested
    hidden: torch.Tensor | None = None  # [steps, D] last-layer output, if requested


def _as_batch(x: torch.Tensor, ndim: int, name: str) -> torch.Tensor:
    """Accept an unbatched input and add the batch axis; only batch size 1 is supported."""
    if x.dim() == ndim - 1:
        x = x.unsqueeze(0)
    if x.dim() != ndim or x.shape[0] != 1:
        raise ValueError(f"{name} must have shape {ndim - 1}-D or [1, ...], got {tuple(x.shape)}")
    return x


@torch.inference_mode()
def generate(
    model: Text2SemanticModel | GPTRuntime,
    phone_ids: torch.Tensor,
    bert: torch.Tensor,
    prompt_tokens: torch.Tensor,
    params: SamplingParams,
    generator: torch.Generator | None,
    max_new_tokens: int = MAX_DECODE_STEPS,
    early_stop_num: int | None = None,
    on_token: Callable[[int], None] | None = None,
    *,
    keep_diagnostics: bool = False,
    min_new_tokens: int = 0,
) -> DecodeResult:
    """Generate semantic tokens for `phone_ids` (`[N]`/`[1,N]`) in the voice of `prompt_tokens`.

    `bert` is `[1024, N]`/`[1, 1024, N]`, `prompt_tokens` `[P]`/`[1, P]` (may be empty).
    `generator` feeds the sampling noise and must live on the model's device.
    `early_stop_num`: stop once more than this many tokens exist (the reference
    apps pass `config.early_stop_num`); `None` disables it.  `on_token` sees each
    kept token as soon as it is final.  `min_new_tokens` keeps EOS out for
    that many steps (at least the reference's 11), for fixed-length benchmarks.
    """
    runtime = as_runtime(model)
    config = runtime.config
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if early_stop_num is not None and early_stop_num < 0:
        raise ValueError(f"early_stop_num must be >= 0 or None, got {early_stop_num}")
    device, dtype = runtime.device, runtime.dtype
    phone_ids = _as_batch(phone_ids, 2, "phone_ids").to(device=device, dtype=torch.long)
    bert = _as_batch(bert, 3, "bert").to(device=device, dtype=dtype)
    prompt_tokens = _as_batch(prompt_tokens, 2, "prompt_tokens").to(device=device, dtype=torch.long)
    num_text, num_prompt = phone_ids.shape[1], prompt_tokens.shape[1]
    if bert.shape[1:] != (config.bert_dim, num_text):
        raise ValueError(
            f"bert must be [1, {config.bert_dim}, {num_text}], got {tuple(bert.shape)}"
        )
    if num_prompt and not 0 <= int(prompt_tokens.min()) <= int(prompt_tokens.max()) < config.eos_id:
        raise ValueError(f"prompt tokens must lie in [0, {config.eos_id})")

    max_steps = min(max_new_tokens, MAX_DECODE_STEPS)
    if early_stop_num is not None:
        max_steps = min(max_steps, early_stop_num + 1)
    prefix_len = num_text + num_prompt
    if num_prompt + max_steps > config.max_positions or prefix_len > config.max_positions:
        raise ValueError("input too long for the positional table")
    # The last generated token is never fed back, hence `max_steps - 1` decode slots.
    session = runtime.session(prefix_len + max_steps - 1)

    # History buffer for the repetition penalty: prompt, then generated tokens.
    history = torch.empty(1, num_prompt + max_steps, dtype=torch.long, device=device)
    history[:, :num_prompt] = prompt_tokens

    logits = session.prefill(phone_ids, bert, prompt_tokens)
    generated: list[int] = []
    logits_log: list[torch.Tensor] = []
    hidden_log: list[torch.Tensor] = []
    stopped_by_eos = False
    steps = 0
    for step in range(max_steps):
        steps += 1
        if keep_diagnostics:
            logits_log.append(logits[0].float().cpu())
            hidden = getattr(session, "last_hidden", None)
            if hidden is not None:
                hidden_log.append(hidden[0].float().cpu())
        choice = sample_next(
            logits,
            history[:, : num_prompt + step],
            step,
            params,
            generator,
            config.eos_id,
            suppress_eos=step < max(EOS_SUPPRESSED_STEPS, min_new_tokens),
        )
        token = int(choice.token[0, 0])
        if bool(choice.argmax_is_eos[0]) or token == config.eos_id:
            stopped_by_eos = True
            break
        generated.append(token)
        if on_token is not None:
            on_token(token)
        if step == max_steps - 1:
            break  # length cap (early_stop_num or the hard cap): keep the token
        history[0, num_prompt + step] = token
        logits = session.step(token, num_prompt + step, prefix_len + step)

    return DecodeResult(
        tokens=torch.tensor(generated, dtype=torch.long),
        stopped_by_eos=stopped_by_eos,
        steps=steps,
        logits=torch.stack(logits_log) if keep_diagnostics else None,
        hidden=torch.stack(hidden_log) if keep_diagnostics and hidden_log else None,
    )
