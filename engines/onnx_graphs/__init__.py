"""Graph wrappers: the exact computation of every exported ONNX/TensorRT graph.

Each wrapper (`gpt`, `sovits`) is an `nn.Module` over an already loaded model
whose `forward` is what the exported graph computes, so export, parity tests
and the runtimes agree on one definition.  The graphs hold no sampling and no
loops: the host keeps the decoding loop, the RNG and the KV-cache bookkeeping.
`contract` names the files and their checks; `files` holds the names alone,
without torch, for a process that opens its graphs before torch has loaded.
This package imports none of its modules itself, so importing one of them
costs only what that module needs.
"""
