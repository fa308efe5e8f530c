"""A tiny Hugging Face BERT built from its config (nothing is downloaded), as users hand one over:
the model itself, taking input_ids and attention_mask, returning a ModelOutput whose unused fields
are None. It needs transformers in the runner image: `--requirements requirements.txt` here."""
import torch
from transformers import BertConfig, BertModel


def make_bert() -> torch.nn.Module:
    config = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=32)
    return BertModel(config).eval()
