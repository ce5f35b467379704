"""A small byte-level GPT language model trained with PyTorch Lightning (see train.py)."""
