"""Errors of backend selection, importable without loading any runtime."""

from __future__ import annotations


class BackendUnavailableError(RuntimeError):
    """The configured backend cannot run here (the message says why)."""
