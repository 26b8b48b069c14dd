"""The build step: turns a voice's official model files into fast runtime engines.

Installed under the import name `kiosk_build` (see pyproject.toml) so that it
never shadows PyPA's `build` package.
"""
