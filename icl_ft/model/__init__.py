"""Gemma-style decoder in Flax NNX, its configs, checkpoints and tokenizer."""
