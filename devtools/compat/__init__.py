"""Compatibility check against golden data produced by the reference GPT-SoVITS code."""
