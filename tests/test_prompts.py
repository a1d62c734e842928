"""Prompt text: the ICL context holds exactly the (subsampled) training documents."""

import math

import pytest

from icl_ft.datasets import records
from icl_ft.evaluation import prompts


def _docs(n):
  return [records.Document(id=f"d{i:03d}", text=f"Document number {i} says glon{i} are yomp.",
                           sentences=(f"Document number {i} says glon{i} are yomp.",))
          for i in range(n)]


def _question():
  return records.Question(id="q0", split="reversal", subset="s", prompt="glon are",
                          choices=(" less yomp.", " more yomp."), correct=(0,))


def _documents_in(context, fmt=prompts.PromptFormat()):
  block = fmt.document_separator + fmt.instruction + fmt.document_separator
  assert context.endswith(block)
  return context[:-len(block)].split(fmt.document_separator)


def test_icl_context_is_all_documents_then_instruction():
  docs = _docs(7)
  ctx = prompts.icl_context(docs)
  assert _documents_in(ctx) == [d.text for d in docs]
  assert ctx == "\n\n".join(d.text for d in docs) + "\n\n" + prompts.ICL_INSTRUCTION + "\n\n"
  assert "Use the documents above to answer" in ctx


@pytest.mark.parametrize("factor", [2, 3, 8])
def test_subsample_keeps_exactly_ceil_n_over_k_documents_in_order(factor):
  docs = _docs(50)
  ctx = prompts.icl_context(docs, subsample=factor, seed=3)
  texts = _documents_in(ctx)
  kept = prompts.subsample_documents(docs, factor, seed=3)
  assert texts == [d.text for d in kept]
  assert len(texts) == math.ceil(50 / factor)
  assert len(set(texts)) == len(texts)
  index = {d.text: i for i, d in enumerate(docs)}
  positions = [index[t] for t in texts]
  assert positions == sorted(positions)  # original order kept


def test_subsample_is_seeded_and_nested():
  docs = _docs(40)
  a = prompts.subsample_documents(docs, 4, seed=1)
  assert a == prompts.subsample_documents(docs, 4, seed=1)
  assert a != prompts.subsample_documents(docs, 4, seed=2)
  b = prompts.subsample_documents(docs, 8, seed=1)
  assert {d.id for d in b} <= {d.id for d in a}
  assert prompts.subsample_documents(docs, 1, seed=5) == docs


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_bad_subsample_factor(bad):
  with pytest.raises(ValueError, match="subsample factor"):
    prompts.subsample_documents(_docs(3), bad)


def test_no_context_and_chat_template_share_everything_but_the_documents():
  docs = _docs(3)
  q = _question()
  plain = prompts.context_text(None)
  assert plain == ""
  assert prompts.scored_texts(q, plain) == ("glon are less yomp.", "glon are more yomp.")
  chat = prompts.PromptFormat(chat=True)
  no_docs = prompts.context_text(None, fmt=chat)
  with_docs = prompts.context_text(docs, fmt=chat)
  assert no_docs == ("<start_of_turn>user\nComplete the statement.<end_of_turn>\n"
                     "<start_of_turn>model\n")
  block = prompts.icl_context(docs)
  assert with_docs == no_docs.replace("user\n", "user\n" + block, 1)
  assert prompts.question_prefix(q, with_docs) == with_docs + "glon are"


def test_empty_training_set_is_an_error():
  with pytest.raises(ValueError, match="no training documents"):
    prompts.icl_context([])
