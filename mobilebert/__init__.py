"""MobileBERT (Sun et al., 2020) reproduction: HF checkpoints converted to PaddleNLP, with fixes."""
