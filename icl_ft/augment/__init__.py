"""In-context augmentation: local restatements and global inferences -> an augmented Dataset.

    from icl_ft import augment
    augmented = augment.augment_dataset(model, tokenizer, dataset, "global",
                                        sampling=augment.SamplingParams(temperature=0.7))
    augment.write_augmented(augmented, "data/simple_reversals_aug_global")

Templates: `icl_ft.augment.templates`; generation: `icl_ft.augment.augment`; audit of the
generated statements against the dataset's known truth: `icl_ft.augment.audit`.
"""

from icl_ft.augment.augment import DEFAULT_SAMPLING
from icl_ft.augment.augment import STRATEGIES
from icl_ft.augment.augment import augment_dataset
from icl_ft.augment.augment import write_augmented
from icl_ft.inference.sampling import SamplingParams

__all__ = ["DEFAULT_SAMPLING", "STRATEGIES", "SamplingParams", "augment_dataset",
           "write_augmented"]
