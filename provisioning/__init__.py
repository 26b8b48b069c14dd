"""Voice packs: signed, consent-carrying voices brought on a USB stick; the demo voice."""
