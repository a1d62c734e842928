"""Running at scale: TPU topologies and recipes, the memory estimator, compile-only dry runs."""
