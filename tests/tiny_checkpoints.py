"""Tiny random Hugging Face checkpoints, built with transformers' own classes."""
from __future__ import annotations

import os

from common.bench_models import draw_vectors, init_grouped_linears  # common before torch: it loads paddle first
import numpy as np
import torch
import transformers
from safetensors.numpy import load_file, save_file

WORDS = (
    "the a an is was of and to in it that this movie film good bad great awful plot acting "
    "fun boring love hate story not very best worst quick brown fox jumps over lazy dog hello world "
    "what who where why how question answer paris france city river"
).split()
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS + [".", ",", "!", "?", "'", "##s", "##ed", "##ing"]


def write_vocab(path: str) -> str:
    os.makedirs(path, exist_ok=True)
    vocab_file = os.path.join(path, "vocab.txt")
    with open(vocab_file, "w", encoding="utf-8") as f:
        f.write("\n".join(VOCAB) + "\n")
    return vocab_file


def save_tiny(path: str, model_type: str, head: str | None = None, seed: int = 0, **config_overrides) -> str:
    """Save a random ``model_type`` checkpoint (``head``: None or "classification") with a vocab."""
    torch.manual_seed(seed)
    config_class = transformers.AutoConfig.for_model(model_type).__class__
    defaults = dict(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    defaults.update(config_overrides)
    config = config_class(**defaults)
    if head == "classification":
        model = transformers.AutoModelForSequenceClassification.from_config(config)
    else:
        model = transformers.AutoModel.from_config(config)
    init_grouped_linears(model)  # HF leaves ConvBERT's grouped FFN uninitialised
    draw_vectors(model)
    model.eval()
    model.save_pretrained(path)
    vocab_file = write_vocab(path)
    slow = transformers.BertTokenizer(vocab_file=vocab_file, do_lower_case=True)
    slow.save_pretrained(path)
    return path


def padded_batch(batch: int, seq: int, seed: int, vocab: int = 60) -> dict[str, np.ndarray]:
    """int64 model inputs: ids drawn from [5, vocab), the first row full length and the others padded to
    random lengths (attention mask 0, id 0), token type 1 from the middle of each row's tokens on."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, seq + 1, size=batch)
    lengths[0] = seq
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)
    ids = np.where(mask == 1, rng.integers(5, vocab, size=(batch, seq)), 0)
    token_type = ((np.arange(seq)[None, :] >= lengths[:, None] // 2) & (mask == 1)).astype(np.int64)
    return {"input_ids": ids, "token_type_ids": token_type, "attention_mask": mask}


def randomize(torch_dir: str, seed: int = 0) -> None:
    """Trained-looking weights: every tensor of the checkpoint drawn anew (HF's init zeroes biases and the [PAD]
    row, leaves grouped linears uninitialised (torch.empty) and makes tiny logits); layer norm scales near 1."""
    path = os.path.join(torch_dir, "model.safetensors")
    rng = np.random.RandomState(seed)
    tensors = {k: rng.normal(0, 0.1, v.shape).astype(np.float32) for k, v in sorted(load_file(path).items())}
    for k in tensors:
        if "layernorm.weight" in k.lower():
            tensors[k] += 1
    save_file(tensors, path, metadata={"format": "pt"})
