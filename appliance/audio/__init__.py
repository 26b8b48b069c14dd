"""Audio out: one stream kept open, the sink seam (sounddevice, null, capture)."""
