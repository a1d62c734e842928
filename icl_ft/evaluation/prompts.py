"""Prompt text for evaluation: the one place that decides what the model sees.

Every condition scores the same text except the documents. A scored sequence is

    [BOS] + context + question.prompt + choice

tokenized in those three pieces separately (`icl_ft.inference.scoring`), where `context` is the
condition's shared prefix (`context_text`):

- `pretrained` / finetuned conditions: no documents, so the plain context is "" and the
  sequence is just `[BOS] prompt choice`;
- `icl`: the ICL block (`icl_context`): the training documents (all of them, or a seeded
  1/k subsample) joined by `DOCUMENT_SEPARATOR`, then the instruction:

      <doc 1>\n\n<doc 2>\n\n ... <doc n>\n\nUse the documents above to answer the question.\n\n

- with the chat template (instruction-tuned checkpoints) the context is Gemma's turn format
  around the same block, and the statement to complete is the model's turn:

      <start_of_turn>user\n<ICL block, or nothing>Complete the statement.<end_of_turn>\n
      <start_of_turn>model\n

  (one line break after `user` and `model`; the task line and turn markers are identical in
  every condition).

The choices are never shown in context; each is scored as a continuation of
`question.prompt` (choices carry their own leading space).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from icl_ft.datasets import records

DOCUMENT_SEPARATOR = "\n\n"
ICL_INSTRUCTION = "Use the documents above to answer the question."
CHAT_TASK = "Complete the statement."
START_OF_TURN = "<start_of_turn>"
END_OF_TURN = "<end_of_turn>"


@dataclasses.dataclass(frozen=True)
class PromptFormat:
  """How the shared context is written (defaults = the paper's plain format).

  Attributes:
    chat: wrap the context in Gemma's chat template (for instruction-tuned checkpoints).
    document_separator: between documents, and between the last one and the instruction.
    instruction: follows the documents in the ICL condition.
    chat_task: the user turn's request in chat mode (every condition).
  """

  chat: bool = False
  document_separator: str = DOCUMENT_SEPARATOR
  instruction: str = ICL_INSTRUCTION
  chat_task: str = CHAT_TASK


def subsample_documents(documents: Sequence[records.Document], subsample: int = 1,
                        seed: int = 0) -> list[records.Document]:
  """A seeded 1/`subsample` of the documents (ceil(n / subsample) of them), in their order.

  Subsamples are nested: for one seed, the documents kept at factor 2k are a subset of those
  kept at factor k (a fixed seeded permutation; factor k keeps its first ceil(n/k) entries).
  `subsample=1` keeps everything.
  """
  if isinstance(subsample, bool) or int(subsample) != subsample or subsample < 1:
    raise ValueError(f"subsample factor must be an integer >= 1, got {subsample!r}")
  documents = list(documents)
  if subsample == 1:
    return documents
  keep = math.ceil(len(documents) / int(subsample))
  order = np.random.default_rng(seed).permutation(len(documents))
  kept = sorted(int(i) for i in order[:keep])
  return [documents[i] for i in kept]


def icl_context(documents: Sequence[records.Document], subsample: int = 1, seed: int = 0,
                fmt: PromptFormat = PromptFormat()) -> str:
  """The ICL block: the (subsampled) documents' texts, the instruction, a trailing separator."""
  docs = subsample_documents(documents, subsample, seed)
  if not docs:
    raise ValueError("icl_context: no training documents to put in context")
  sep = fmt.document_separator
  return sep.join(d.text for d in docs) + sep + fmt.instruction + sep


def context_text(documents: Sequence[records.Document] | None = None, subsample: int = 1,
                 seed: int = 0, fmt: PromptFormat = PromptFormat()) -> str:
  """The shared prefix of every scored sequence after BOS (module docstring).

  `documents=None` is the no-context condition (pretrained, finetuned).
  """
  block = "" if documents is None else icl_context(documents, subsample, seed, fmt)
  if not fmt.chat:
    return block
  return (f"{START_OF_TURN}user\n{block}{fmt.chat_task}{END_OF_TURN}\n"
          f"{START_OF_TURN}model\n")


def question_prefix(question: records.Question, context: str = "") -> str:
  """The text every choice of `question` continues: context + the question's prompt."""
  return context + question.prompt


def scored_texts(question: records.Question, context: str = "") -> tuple[str, ...]:
  """The full text scored for each choice (without BOS), e.g. for display and debugging."""
  prefix = question_prefix(question, context)
  return tuple(prefix + c for c in question.choices)
