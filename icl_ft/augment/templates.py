"""Prompt templates for in-context augmentation (local and global), and their output parsing.

The one place that decides what the model sees when it writes augmentation traces, and what
the pretraining corpus' augmentation-style episodes look like (`icl_ft.pretrain.corpus`
builds its episodes with these functions, so the tiny default model is pretrained on exactly
this format).

- Local (per sentence): few-shot examples of rephrasings and reversals, then the sentence:

      Restate the statement in other words, including its reversal.\n\n
      Statement: <example>\nRestatements:\n- <r1>\n- <r2>\n\n      (x len(LOCAL_EXAMPLES))
      Statement: <sentence>\nRestatements:\n-

- Global (per document): the training corpus in context (the ICL block of `icl_ft.evaluation.prompts`
  without its question instruction), then the document, asking for inferences that link it to
  the rest:

      <doc 1>\n\n ... <doc n>\n\n
      Think about what follows from the next document together with the documents above.\n\n
      Document: <document>\nInferences:\n-

Both prompts end with the dash of the first bullet, without its space (BULLET_OPEN), so the
model writes the space as it does in training text. Generation stops at STOP (a blank line);
`parse_statements` turns the generated text into one statement per "- " line. Few-shot words
come from the reserved `pretraining` word pool, never from a pool an evaluation dataset draws
from.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from icl_ft.datasets import syllogisms
from icl_ft.datasets import words
from icl_ft.evaluation import prompts

LOCAL_INSTRUCTION = "Restate the statement in other words, including its reversal."
GLOBAL_INSTRUCTION = "Think about what follows from the next document together with the documents above."
STATEMENT_LABEL = "Statement:"
RESTATEMENTS_LABEL = "Restatements:"
DOCUMENT_LABEL = "Document:"
INFERENCES_LABEL = "Inferences:"
BULLET = "- "
# Prompts end with the bullet's dash, not its space: SentencePiece writes a space as the next
# piece's "▁", so a prompt ending in "- " puts a lone "▁" piece where training text never
# has one, and the first generated word comes out garbled.
BULLET_OPEN = BULLET.rstrip()
STOP = "\n\n"

_EXAMPLE_SEED = 20250501


def _example_words(n: int) -> list[str]:
  return random.Random(_EXAMPLE_SEED).sample(list(words.pool("pretraining")), n)


def _local_examples() -> tuple[tuple[str, tuple[str, ...]], ...]:
  a, b, c, d, e, f = _example_words(6)
  syllogism = syllogisms.Statement("all", c, d)  # its restatements are the syllogisms dataset's
  return (
      (f"{a.capitalize()} are heavier than {b}.",
       (f"{b.capitalize()} are lighter than {a}.", f"{a.capitalize()} weigh more than {b}.")),
      (syllogism.text(), tuple(syllogisms.restatements(syllogism))),
      (f"The {e} is a kind of {f}.",
       (f"One kind of {f} is the {e}.", f"{e.capitalize()}s are {f}s.")),
  )


LOCAL_EXAMPLES: tuple[tuple[str, tuple[str, ...]], ...] = _local_examples()


def bullets(statements: Sequence[str]) -> str:
  """Statements as "- " lines, each ending in a newline."""
  return "".join(f"{BULLET}{s}\n" for s in statements)


def local_prompt(sentence: str,
                 examples: Sequence[tuple[str, Sequence[str]]] = LOCAL_EXAMPLES) -> str:
  """The local-augmentation prompt for one training sentence (ends with the first bullet's dash)."""
  shots = "".join(f"{STATEMENT_LABEL} {s}\n{RESTATEMENTS_LABEL}\n{bullets(r)}\n"
                  for s, r in examples)
  return (f"{LOCAL_INSTRUCTION}{STOP}{shots}"
          f"{STATEMENT_LABEL} {sentence}\n{RESTATEMENTS_LABEL}\n{BULLET_OPEN}")


def global_context(corpus: Sequence[str],
                   separator: str = prompts.DOCUMENT_SEPARATOR) -> str:
  """The shared prefix of every global-augmentation prompt: the corpus and the instruction."""
  if not corpus:
    raise ValueError("global augmentation needs at least one document in context")
  return separator.join(corpus) + separator + GLOBAL_INSTRUCTION + separator


def global_suffix(document: str) -> str:
  """What follows the shared corpus for one document (ends with the first bullet's dash)."""
  return f"{DOCUMENT_LABEL} {document}\n{INFERENCES_LABEL}\n{BULLET_OPEN}"


def global_prompt(corpus: Sequence[str], document: str) -> str:
  """The whole global-augmentation prompt for one document."""
  return global_context(corpus) + global_suffix(document)


def parse_statements(generated: str, complete: bool = True) -> list[str]:
  """The statements in a generated continuation of a prompt that ends with a bullet.

  The continuation is cut at STOP; its first line continues the prompt's bullet, later lines
  count only when they start with a bullet; whitespace is normalized and empty items dropped.
  `complete=False` (generation ran out of tokens): the last line is unfinished and dropped.
  """
  lines = generated.split(STOP, 1)[0].split("\n")
  if not complete:
    lines = lines[:-1]
  out = []
  for i, line in enumerate(lines):
    if i > 0:
      if not line.startswith(BULLET_OPEN):
        continue
      line = line[len(BULLET_OPEN):]
    line = " ".join(line.split())
    if line:
      out.append(line)
  return out
