"""Graph wrappers: the exact computation of every exported ONNX/TensorRT graph.

Each wrapper is an `nn.Module` over an already loaded model whose `forward`
is what the exported graph computes, so export, parity tests and the
runtimes agree on one definition.  The graphs hold no sampling and no loops:
the host keeps the decoding loop, the RNG and the KV-cache bookkeeping.
"""

from .gpt import GPTDecodeGraph, GPTPrefillGraph, cache_input_names
from .ops import TENSORRT_OPS, graph_ops
from .sovits import SoVITSEncoderGraph, SoVITSFlowVocoderGraph, prior_frames

__all__ = [
    "TENSORRT_OPS",
    "GPTDecodeGraph",
    "GPTPrefillGraph",
    "SoVITSEncoderGraph",
    "SoVITSFlowVocoderGraph",
    "cache_input_names",
    "graph_ops",
    "prior_frames",
]
