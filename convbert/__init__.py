"""ConvBERT (Jiang et al., 2020) reproduction: YituTech's checkpoints converted from Hugging Face to PaddleNLP."""
