"""Tiny stand-ins for the pretrained helper models, for tests and demos.

Random BERT and HuBERT of the real architectures, with the widths a voice
expects (1024 and 768), saved with `save_pretrained` in the standard
`pretrained_models/` layout, so the real loading code reads them.
"""

from __future__ import annotations

from pathlib import Path

import torch


def write_tiny_helpers(pretrained: Path, hanzi: str) -> Path:
    """Write tiny BERT (vocabulary: `hanzi` and a few marks) and HuBERT folders; seeded."""
    from transformers import BertConfig, BertModel, BertTokenizerFast, HubertConfig, HubertModel

    torch.manual_seed(0)
    bert_dir = pretrained / "chinese-roberta-wwm-ext-large"
    bert_dir.mkdir(parents=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "，", "。", *dict.fromkeys(hanzi)]
    (bert_dir / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizerFast(vocab_file=str(bert_dir / "vocab.txt")).save_pretrained(bert_dir)
    BertModel(
        BertConfig(
            vocab_size=len(vocab),
            hidden_size=1024,
            num_hidden_layers=3,
            num_attention_heads=4,
            intermediate_size=256,
        )
    ).save_pretrained(bert_dir)
    HubertModel(
        HubertConfig(
            hidden_size=768,
            num_hidden_layers=1,
            num_attention_heads=4,
            intermediate_size=128,
            conv_dim=(16,) * 7,
            num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=4,
        )
    ).save_pretrained(pretrained / "chinese-hubert-base")
    return pretrained
