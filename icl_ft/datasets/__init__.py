"""Synthetic datasets of the study (pure Python: nothing here imports JAX)."""

from icl_ft.datasets.records import Dataset, Document, Question, read_dataset, write_dataset

__all__ = ["Dataset", "Document", "Question", "read_dataset", "write_dataset"]
