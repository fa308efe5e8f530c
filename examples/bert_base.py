"""BERT-base (or BERT-large) from transformers with random weights: the GPU benchmarks' BERT (nothing
is downloaded). transformers is needed only where the factory runs: the runners' Python
(`--executor local --python ...`), never the host.

One input, `input_ids` int64 (batch, sequence: 128 in benchmarks/gpu_models.py, up to 512), and one
output tensor, the last hidden state (batch, sequence, 768; 1024 for large), so that every exporter
sees a single tensor. nav-orch's random samples
(`--input input_ids:8,128:int64`, orchestrator/samples.py random_samples) draw integers in
[0, 10), always below the vocabulary's 30522 ids, so the ids are passed on unchanged (no modulo).
"""
from typing import Any

import torch
from transformers import BertConfig, BertModel

# "tiny" is for smoke tests on CPUs (the vocabulary stays BERT's, so the same ids work); "base" is
# BertConfig()'s defaults: 12 layers, hidden size 768, 12 heads, 30522 ids, 512 positions; "large"
# is BERT-large's shape (Devlin et al.): 24 layers, hidden size 1024, 16 heads, feed-forward 4096.
SIZES: dict[str, dict[str, Any]] = {
    "base": {},
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
    "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 max_position_embeddings=128),
}


class LastHiddenState(torch.nn.Module):
    """BertModel called on the ids alone (no attention mask: every token attends to every other),
    returning the last hidden state rather than its output object."""

    def __init__(self, bert: BertModel) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.bert(input_ids=input_ids, return_dict=False)[0]


def make_bert_base(size: str = "base") -> torch.nn.Module:
    if size not in SIZES:
        raise ValueError(f"size {size!r}: expected one of {', '.join(SIZES)}")
    torch.manual_seed(0)
    return LastHiddenState(BertModel(BertConfig(**SIZES[size]))).eval()
