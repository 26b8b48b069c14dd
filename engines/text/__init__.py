"""Text frontend: text in, phone ids (and word-to-phone counts for BERT) out."""
