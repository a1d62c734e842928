"""The embedded default model: its synthetic pretraining corpus and the recipe."""
