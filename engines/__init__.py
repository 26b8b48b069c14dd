"""Model runtime: official file loading, GPT-SoVITS models, synthesis, compatibility check."""

from engines.threads import prepare_environment

# Before any engines module imports torch: OpenMP reads its wait policy at load.
prepare_environment()
