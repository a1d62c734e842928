"""In-context augmentation: prompt splitting, filters, corpus subsampling, and icl-ft-augment
end to end on a freshly initialized tiny model (its text is junk: the audit says so)."""

import dataclasses
import json

import pytest
import train_setup

from icl_ft import augment
from icl_ft.augment import audit
from icl_ft.augment import augment as augment_lib
from icl_ft.augment import templates
from icl_ft.bin import augment as augment_bin
from icl_ft.datasets import records
from icl_ft.datasets import simple_reversals
from icl_ft.datasets import words
from icl_ft.datasets.text import normalize
from icl_ft.inference import sampling

@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  """A small dataset on disk and a tokenizer with the tiny preset's 1024 pieces."""
  from icl_ft.model import config as model_config
  from icl_ft.model.tokenizer import train_sentencepiece

  try:  # the session's persistent XLA compilation cache
    import train_setup
    train_setup.enable_compilation_cache(
        str(tmp_path_factory.getbasetemp() / "jax_compilation_cache"))
  except ImportError:
    pass
  root = tmp_path_factory.mktemp("augment")
  ds = simple_reversals.generate(
      dataclasses.replace(simple_reversals.SCALES["small"], num_facts=6, articles_per_fact=2))
  data_dir = records.write_dataset(ds, root / "data")
  texts = [d.text for d in ds.train] + [templates.local_prompt("x"), templates.global_suffix("x")]
  texts += [q.prompt + c for qs in ds.tests.values() for q in qs for c in q.choices]
  texts += list(words.pool("pretraining"))
  tok = train_sentencepiece(texts, model_config.get_preset("tiny").vocab_size, root / "tok.model")
  return {"root": root, "data": str(data_dir), "tok_path": str(root / "tok.model"), "tok": tok,
          "dataset": ds}


def test_local_parts_split_the_prompt():
  prefix, suffix = augment_lib.local_parts("Dax are feps.")
  assert prefix + suffix == templates.local_prompt("Dax are feps.")
  assert prefix == augment_lib.local_parts("Something else entirely.")[0]
  assert suffix.startswith(templates.STATEMENT_LABEL) and suffix.endswith(templates.BULLET_OPEN)


def test_prompts_end_where_training_text_continues(setup):
  """A prompt's tokens are a prefix of the tokens of the prompt followed by its first bullet's
  statement, as in the pretraining corpus' episodes: no lone space piece before the answer."""
  tok, doc = setup["tok"], setup["dataset"].train[0]
  statement = " " + doc.sentences[0]
  for prompt in (templates.local_prompt(doc.sentences[0]), templates.global_suffix(doc.text)):
    ids = tok.encode(prompt)
    assert tok.encode(prompt + statement)[: len(ids)] == ids
    assert not prompt.endswith(" ")


def test_filters_and_provenance(setup):
  ds = setup["dataset"]
  doc = ds.train[0]
  requests = augment_lib.global_requests(records.Dataset(ds.name, (doc,), ds.tests, ds.card))
  text = (f"{doc.sentences[0]}\n- Something new.\n- something NEW!\n-   \n- Another one."
          f"\n\n- ignored after the stop")
  comp = sampling.Completion(text, (1,), "stop")
  counts = dict.fromkeys(("statements", "finished_by_stop", "dropped_empty", "dropped_copy",
                          "dropped_duplicate", "dropped_cut", "kept"), 0)
  docs = augment_lib._generated(requests, [comp], "global", audit.Auditor(ds), counts)
  assert [d.text for d in docs] == ["Something new.", "Another one."]
  assert counts["dropped_copy"] == 1 and counts["dropped_duplicate"] == 1
  assert counts["statements"] == 4 and counts["kept"] == 2
  for k, d in enumerate(docs):
    assert d.id == f"aug_global_{doc.id}_{k:03d}"
    assert d.metadata["source_document"] == doc.id and d.metadata["strategy"] == "global"
    assert d.metadata["audit"] == "unparsed"


def test_statement_cut_by_the_token_limit_is_dropped(setup):
  ds = setup["dataset"]
  requests = augment_lib.global_requests(records.Dataset(ds.name, ds.train[:1], ds.tests, ds.card))
  counts = dict.fromkeys(("statements", "finished_by_stop", "dropped_empty", "dropped_copy",
                          "dropped_duplicate", "dropped_cut", "kept"), 0)
  cut = sampling.Completion(" One whole.\n- Two whole.\n- Three cut sho", (1,), "length")
  docs = augment_lib._generated(requests, [cut], "global", audit.Auditor(ds), counts)
  assert [d.text for d in docs] == ["One whole.", "Two whole."] and counts["dropped_cut"] == 1
  # A line break last: every statement was finished.
  assert templates.parse_statements(" One.\n", complete=False) == ["One."]
  assert templates.parse_statements(" One cut", complete=False) == []


def test_fit_corpus_subsamples_nested(setup):
  tok, ds = setup["tok"], setup["dataset"]
  full, n_full = augment_lib.fit_corpus(tok, ds.train, 10**6, seed=0)
  assert full == list(ds.train)
  half, n_half = augment_lib.fit_corpus(tok, ds.train, 2 * n_full // 3, seed=0)
  quarter, _ = augment_lib.fit_corpus(tok, ds.train, n_full // 3, seed=0)
  assert 0 < len(quarter) < len(half) < len(full) and n_half <= 2 * n_full // 3
  assert set(d.id for d in quarter) <= set(d.id for d in half)  # nested
  order = {d.id: i for i, d in enumerate(ds.train)}
  assert [order[d.id] for d in half] == sorted(order[d.id] for d in half)  # dataset order
  with pytest.raises(ValueError, match="not even one document"):
    augment_lib.fit_corpus(tok, ds.train, 5, seed=0)


def test_bad_input(setup, capsys):
  config = train_setup.config_file("augment").get_config("sideways")
  config.dataset_dir, config.output_dir = setup["data"], str(setup["root"] / "never")
  config.model.tokenizer = setup["tok_path"]
  assert augment_bin.execute(config) == 1
  assert "unknown augmentation strategy 'sideways'" in capsys.readouterr().err
  config.strategy = "local"
  config.dataset_dir = str(setup["root"] / "missing")
  assert augment_bin.execute(config) == 1
  assert "not a dataset directory" in capsys.readouterr().err
  config.dataset_dir = setup["data"]
  config.output_dir = setup["data"]
  assert augment_bin.execute(config) == 1
  assert "already exists" in capsys.readouterr().err
  assert not (setup["root"] / "never").exists()
  with pytest.raises(ValueError, match="unknown augmentation strategy"):
    augment.augment_dataset(None, setup["tok"], setup["dataset"], "both")


def test_binary_end_to_end(setup, capsys):
  """icl-ft-augment (all = local + global, corpus subsampled) writes a dataset the pipeline reads."""
  from icl_ft.pipeline import loader as pipeline_loader

  out = setup["root"] / "augmented"
  config = train_setup.config_file("augment").get_config("all")
  config.dataset_dir, config.output_dir = setup["data"], str(out)
  config.model.tokenizer = setup["tok_path"]
  config.sampling.max_new_tokens = 12
  config.sampling.temperature = 1.0
  config.max_context_tokens = 100  # smaller than the 12-document corpus: subsampled
  config.batch_size = 8
  config.progress = False
  assert augment_bin.execute(config) == 0, capsys.readouterr().err
  assert "generated documents" in capsys.readouterr().out

  original = setup["dataset"]
  aug = records.read_dataset(out)
  assert aug.tests == original.tests
  assert aug.train[:len(original.train)] == original.train
  generated = aug.train[len(original.train):]
  assert generated, "a random model still writes some text"
  sources = {d.id for d in original.train}
  labels = []
  for d in generated:
    assert d.metadata["strategy"] in ("local", "global")
    assert d.metadata["source_document"] in sources
    assert d.metadata["audit"] in ("restatement", "inference", "false", "unparsed") or \
        d.metadata["audit"].startswith("test:")
    assert d.text and d.sentences == (d.text,)
    labels.append(d.metadata["audit"])
  assert len({d.id for d in aug.train}) == len(aug.train)
  assert len({(d.metadata["strategy"], normalize(d.text)) for d in generated}) == len(generated)

  card = json.loads((out / "card.json").read_text())
  info = card["augmentation"]
  assert info["strategy"] == "all" and set(info["strategies"]) == {"local", "global"}
  assert info["counts"]["generated_documents"] == len(generated)
  assert info["audit"] == audit.summarize(labels)
  assert info["sampling"]["temperature"] == 1.0 and templates.STOP in info["sampling"]["stop"]
  assert info["strategies"]["local"]["counts"]["prompts"] == sum(
      len(d.sentences) for d in original.train)
  glob = info["strategies"]["global"]
  assert glob["counts"]["prompts"] == len(original.train)
  assert glob["subsampled"] and 0 < glob["context_documents"] < len(original.train)
  assert glob["context_tokens"] <= 100
  assert card["counts"]["train_documents"] == len(aug.train)

  # The finetuning pipeline streams it.
  it = pipeline_loader.make_train_iterator(str(out), setup["tok"], fmt="document", seq_len=64,
                                           global_batch_size=8, num_epochs=1, shard_index=0,
                                           shard_count=1)
  batch = next(iter(it))
  assert batch["tokens"].shape == (8, 64) and batch["loss_mask"].sum() > 0
