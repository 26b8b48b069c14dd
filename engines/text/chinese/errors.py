"""The one error the Mandarin frontend may raise."""

from __future__ import annotations


class TextFrontendError(ValueError):
    """A request the frontend cannot serve (an unknown symbol-table version).

    Text itself never raises: anything unpronounceable is dropped or becomes
    "UNK" and is reported in `G2PResult.uncovered`, so the kiosk keeps talking.
    """
