"""Stand-in for the reference trainer's `utils.HParams`, pickled inside SoVITS `.pth` files.

Official SoVITS files store their training configuration as a pickled object of
class `utils.HParams` (nested for sub-sections), not as a dict.  Loading such a
file with `weights_only=True` needs an allow-listed class under that exact
name; this one is that class.  It is only a container: every value is
converted to plain dicts before the rest of the project sees it.
"""

from __future__ import annotations

from typing import Any

#: The global name under which official files pickle their configuration.
PICKLED_NAME = "utils.HParams"


class OfficialHParams:
    """Attribute bag the unpickler fills through `__dict__` (pickle BUILD)."""

    def __init__(self, **entries: Any) -> None:
        for key, value in entries.items():
            setattr(self, key, OfficialHParams(**value) if isinstance(value, dict) else value)

    def to_dict(self) -> dict[str, Any]:
        """The configuration as nested plain dicts."""
        return {
            k: v.to_dict() if isinstance(v, OfficialHParams) else v for k, v in vars(self).items()
        }


def plain_config(config: Any) -> dict[str, Any]:
    """A checkpoint's `config` entry as nested dicts, whichever form it was stored in."""
    if isinstance(config, OfficialHParams):
        return config.to_dict()
    if isinstance(config, dict):
        return {
            k: plain_config(v) if isinstance(v, (dict, OfficialHParams)) else v
            for k, v in config.items()
        }
    return {}
