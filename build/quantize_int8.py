"""Build step: an 8-bit-weight copy of the GPT decode graph for CPUs, and its verdict.

Why: at batch 1 a decode step reads every GPT weight once, ~300 MB in FP32 for
the 24-layer model, so on a CPU it is bound by memory bandwidth.  ONNX
Runtime's `MatMulNBits` keeps the weights as 8-bit integers with one FP32
scale per block of 32 and multiplies in int8: a quarter of the bytes, and
about 2x faster steps on a 2-core machine.

Rounding the weights moves the logits by a few hundredths, which can change a
close argmax.  So the copy is only *offered*: the build runs greedy decoding
through it and through the FP32 model on validation inputs, and records in the
manifest whether every token (EOS included) came out the same.  Runtimes use
the int8 graph only for a voice that passed, exactly as FP16 engines are
treated on a GPU.  The logits projection, embeddings, LayerNorms and the
attention itself stay FP32.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import onnx

from engines.backends.precision import ValidationCase, compare_greedy, default_validation_cases
from engines.gpt.model import Text2SemanticModel

from .log_levels import quieted

log = logging.getLogger(__name__)

#: Weights per FP32 scale.  Blocks of 128 decode a step faster (4.8 vs 6.4 ms on the
#: 24-layer GPT, 2-core AMD EPYC), but on five formula-weight GPTs they changed a
#: greedy token sooner than blocks of 32 did (and passed the check 0 times, against 1):
#: a voice that keeps its words matters more than 1.6 ms per token.
BLOCK_SIZE = 32
#: Validation: greedy decoding of this many synthetic inputs, this many steps each.
VALIDATION_CASES = 4
VALIDATION_STEPS = 64
#: `accuracy_level` 4 = int8 activations and int8 dot products (VNNI where present).
ACCURACY_LEVEL = 4


def not_validated(why: str) -> dict[str, Any]:
    """The verdict of a graph that was not checked (never used by "auto")."""
    return {"passed": False, "detail": f"not checked: {why}", "max_logit_diff": None,
            "tokens_compared": 0}  # fmt: skip


def _logits_matmuls(model: onnx.ModelProto, output: str = "logits") -> list[str]:
    """Names of the MatMul nodes that compute `output` (through at most a bias Add)."""
    producers = {out: node for node in model.graph.node for out in node.output}
    node = producers.get(output)
    names = []
    for _ in range(3):
        if node is None:
            break
        if node.op_type == "MatMul":
            names.append(node.name)
            break
        node = next((producers[i] for i in node.input if i in producers), None)
    return names


def quantize_decode_graph(src: str | Path, dst: str | Path) -> int:
    """Write `dst`: `src` with every constant-weight MatMul but the logits in 8 bits.

    Returns how many MatMul nodes were converted.  Written atomically.
    """
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    dst = Path(dst)
    model = onnx.load(str(src))
    keep_fp32 = _logits_matmuls(model)
    config = DefaultWeightOnlyQuantConfig(
        block_size=BLOCK_SIZE, is_symmetric=True, accuracy_level=ACCURACY_LEVEL, bits=8
    )
    quantizer = MatMulNBitsQuantizer(model, nodes_to_exclude=keep_fp32, algo_config=config)
    with quieted("onnxruntime.quantization"):  # one INFO line per node otherwise
        quantizer.process()
    converted = sum(1 for n in quantizer.model.model.graph.node if n.op_type == "MatMulNBits")
    tmp = dst.with_name(dst.name + ".partial")
    try:
        quantizer.model.save_model_to_file(str(tmp), use_external_data_format=False)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return converted


def validate_int8(
    model: Text2SemanticModel,
    prefill_path: str | Path,
    int8_decode_path: str | Path,
    cases: list[ValidationCase] | None = None,
    steps: int = VALIDATION_STEPS,
) -> dict[str, Any]:
    """Greedy tokens of the int8 decode graph (on the CPU) against the FP32 torch model.

    Returns the manifest record: `passed`, `detail`, `max_logit_diff`, `tokens_compared`.
    """
    from engines.backends.onnxruntime_backend import OrtGPTRuntime
    from engines.backends.ort_sessions import CPU_EP

    runtime = OrtGPTRuntime(
        Path(prefill_path), Path(int8_decode_path), model.config, providers=[CPU_EP]
    )
    cases = cases or default_validation_cases(model.config, count=VALIDATION_CASES)
    outcome = compare_greedy(model.float().eval(), runtime, cases, steps)
    (log.info if outcome.passed else log.warning)(
        "int8 GPT decode %s: %s (largest logit change %.3g)",
        "accepted" if outcome.passed else "rejected, FP32 stays in use",
        outcome.detail,
        outcome.max_logit_diff,
    )
    return outcome.as_dict()
