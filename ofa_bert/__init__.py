"""OFA-BERT reproduction: BERT-family checkpoints converted from Hugging Face to PaddleNLP."""
