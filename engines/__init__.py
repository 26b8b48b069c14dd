"""Model runtime: official file loading, GPT-SoVITS models, synthesis, compatibility check."""
