"""icl_ft: generalization from in-context learning vs finetuning, in JAX/Flax."""

__version__ = "0.1.0"
