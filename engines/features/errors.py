"""Error types of the feature helpers.

All are `ValueError`s so that callers which already treat bad input as a value
problem keep working; the subclasses let the kiosk tell "install the model"
apart from "record another reference clip" and "fix the text".
"""

from __future__ import annotations

from engines.wav_io import WavFileError


class FeatureModelError(ValueError):
    """A pretrained helper model folder is missing, incomplete or of the wrong kind."""


class ReferenceClipError(ValueError):
    """The reference clip cannot be used (unreadable, too short or too long, not finite)."""


class AudioFileError(ReferenceClipError, WavFileError):
    """An audio file cannot be read; the only audio loaded here is a reference clip."""


class TextFeatureError(ValueError):
    """Text and word2ph do not fit together, or the text is too long for BERT."""
