"""Which ONNX operators the exported graphs may contain.

The same files feed TensorRT's ONNX parser, so every graph is checked against
an allow-list of operators that parser implements (TensorRT 10 "supported ops"
list) and that need no plugin: no complex STFT, no Loop/If/Scan, no sequence ops.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # onnx takes a second to import; a booting kiosk never needs it
    import onnx

#: Standard-domain operators TensorRT 10 parses natively (the subset we can need).
TENSORRT_OPS: frozenset[str] = frozenset(
    {
        "Abs", "Add", "And", "ArgMax", "Cast", "CastLike", "Ceil", "Clip", "Concat",
        "Constant", "ConstantOfShape", "Conv", "ConvTranspose", "Cos", "CumSum", "Div",
        "Einsum", "Equal", "Erf", "Exp", "Expand", "Flatten", "Floor", "Gather",
        "GatherElements", "GatherND", "Gelu", "Gemm", "Greater", "GreaterOrEqual",
        "Identity", "LayerNormalization", "LeakyRelu", "Less", "LessOrEqual", "Log",
        "MatMul", "Max", "Min", "Mod", "Mul", "Neg", "Not", "Or", "Pad", "Pow", "PRelu",
        "Range", "Reciprocal", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceSum",
        "Relu", "Reshape", "Resize", "ScatterElements", "ScatterND", "Shape", "Sigmoid",
        "Sign", "Sin", "Slice", "Softmax", "Split", "Sqrt", "Squeeze", "Sub", "Sum",
        "Tanh", "Tile", "Transpose", "Trilu", "Unsqueeze", "Where",
    }
)  # fmt: skip


def graph_ops(model: onnx.ModelProto | str | Path) -> dict[str, int]:
    """`op_type -> count` over the main graph and every subgraph (domain-qualified if custom)."""
    import onnx

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    counts: dict[str, int] = {}

    def visit(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            standard = node.domain in ("", "ai.onnx")
            name = node.op_type if standard else f"{node.domain}::{node.op_type}"
            counts[name] = counts.get(name, 0) + 1
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    visit(attr.g)
                for sub in attr.graphs:
                    visit(sub)

    visit(model.graph)
    for function in model.functions:  # local functions would hide ops from the parser
        counts[f"function::{function.name}"] = counts.get(f"function::{function.name}", 0) + 1
    return counts
