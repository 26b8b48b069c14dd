"""Runtimes for a voice's networks, behind one interface (see `base.py`)."""
