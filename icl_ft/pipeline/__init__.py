"""grain input pipelines: formats, tokenization, packing, sharding onto the mesh."""
