"""The reversal-curse celebrities set: sizes, invariants, and the original-layout loader."""

import dataclasses
import json
import re
from collections import Counter

import pytest

from icl_ft.datasets import celebrities, celebrities_original, records, text
from icl_ft.evaluation import prompts


@pytest.fixture(scope="module")
def paper():
  return celebrities.generate(celebrities.Params(), seed=0)


@pytest.fixture(scope="module")
def berglund():
  """Berglund et al.'s own split: 30 p2d + 30 both + 30 d2p people, also 3600 examples."""
  return celebrities.generate(celebrities.Params(num_p2d_people=30, num_both_people=30, num_d2p_people=30), seed=1)


def _people(dataset, group):
  return dataset.card["people"][group]


def _in_training(dataset):
  """`contains_statement(all training text, statement)`, normalizing the training text once."""
  haystack = f" {text.normalize(chr(10).join(d.text for d in dataset.train))} "
  return lambda statement: bool(text.normalize(statement)) and f" {text.normalize(statement)} " in haystack


def test_paper_scale_counts(paper):
  assert len(paper.train) == 3600 == celebrities.Params().num_train_documents
  assert all(d.sentences == (d.text,) for d in paper.train)
  assert len({d.id for d in paper.train}) == 3600
  by_group = Counter((d.metadata["group"], d.metadata["direction"]) for d in paper.train)
  assert by_group == {("p2d", "p2d"): 1200, ("both", "p2d"): 1200, ("both", "d2p"): 1200}
  assert {split: len(qs) for split, qs in paper.tests.items()} == {"reversal": 200, "forward": 200}
  assert paper.card["scale"] == "paper" and paper.card["seed"] == 0
  assert paper.card_with_counts()["counts"]["train_documents"] == 3600


def test_berglund_split_also_gives_3600(berglund):
  assert len(berglund.train) == 3600
  assert Counter(q.subset for q in berglund.tests["reversal"]) == {"p2d_reverse": 150, "d2p_reverse": 150}
  assert Counter(q.subset for q in berglund.tests["forward"]) == {"p2d": 150, "d2p": 150}
  assert berglund.card["scale"] == "custom"


def test_small_scale_counts():
  ds = celebrities.generate(celebrities.SCALES["small"])
  assert len(ds.train) == (10 + 2 * 10) * 5
  assert {s: len(q) for s, q in ds.tests.items()} == {"reversal": 20, "forward": 20}
  assert ds.card["scale"] == "small"


def test_deterministic_and_seed_dependent():
  a = celebrities.generate(celebrities.SCALES["small"], seed=5)
  b = celebrities.generate(celebrities.SCALES["small"], seed=5)
  c = celebrities.generate(celebrities.SCALES["small"], seed=6)
  assert a == b
  assert [d.text for d in a.train] != [d.text for d in c.train]


def test_people_and_descriptions_are_unique(paper):
  people = [p for group in paper.card["people"].values() for p in group]
  assert len(people) == 80
  assert len({p["name"] for p in people}) == 80
  assert len({p["description"] for p in people}) == 80
  assert len({p["fact_id"] for p in people}) == 80
  for p in people:
    assert p["description"].startswith("the ")
    assert re.fullmatch(r"[A-Z][\w'.-]* [A-Z][\w'.-]*", p["name"]), p["name"]


def test_set_a_reversals_never_in_training_but_forward_facts_are(paper):
  in_training = _in_training(paper)
  for q in paper.tests["reversal"]:
    assert q.subset == "p2d_reverse"
    held_out = q.prompt + q.choices[q.correct[0]]
    assert not in_training(held_out), held_out
  for person in _people(paper, "p2d"):
    name, description = person["name"], person["description"]
    docs = [d for d in paper.train if name in d.text]
    assert len(docs) == 30
    for d in docs:
      assert d.fact_ids == (person["fact_id"],)
      assert d.metadata["direction"] == "p2d"
      # name always first: the description -> name order never occurs for set A
      assert d.text.index(name) < d.text.index(description)
      assert not text.contains_statement(d.text, f"{description}, {name}")
    assert in_training(f"{name}, known far and wide for being {description}")
  for person in _people(paper, "both"):  # set B in both orders, as separate examples
    docs = [d for d in paper.train if person["name"] in d.text]
    assert Counter(d.metadata["direction"] for d in docs) == {"p2d": 30, "d2p": 30}


def test_questions_are_well_formed(paper):
  set_a = _people(paper, "p2d")
  names = {" " + p["name"] for p in set_a}
  descriptions = {" " + p["description"] for p in set_a}
  by_name = {p["name"]: p for p in set_a}
  for split, pool in (("reversal", names), ("forward", descriptions)):
    positions = Counter()
    for q in paper.tests[split]:
      assert len(q.choices) == 4 and len(set(q.choices)) == 4
      assert len(q.correct) == 1 and 0 <= q.correct[0] < 4
      positions[q.correct[0]] += 1
      assert set(q.choices) <= pool  # distractors: other set-A people
      answer = q.choices[q.correct[0]]
      person = by_name[answer.strip()] if split == "reversal" else next(
          p for p in set_a if p["description"] == answer.strip())
      assert q.fact_ids == (person["fact_id"],)
      # the prompt ends right before the answer and names the other side of the fact
      assert answer.strip() not in q.prompt
      other = person["description"] if split == "reversal" else person["name"]
      assert other in q.prompt
      assert not q.prompt.endswith(" ")
    assert len(positions) == 4  # the right answer is not always in the same place
  assert len({q.id for qs in paper.tests.values() for q in qs}) == 400


def test_test_templates_are_held_out(paper):
  in_training = _in_training(paper)
  for q in paper.tests["forward"]:
    assert not in_training(q.prompt + q.choices[q.correct[0]])


def test_d2p_people_reverse_to_description(berglund):
  d2p = _people(berglund, "d2p")
  descriptions = {" " + p["description"] for p in d2p}
  for person in d2p:
    for d in (d for d in berglund.train if person["name"] in d.text):
      assert d.text.index(person["description"][1:]) < d.text.index(person["name"])
  in_training = _in_training(berglund)
  for q in berglund.tests["reversal"]:
    if q.subset == "d2p_reverse":
      assert set(q.choices) <= descriptions
      assert not in_training(q.prompt + q.choices[q.correct[0]])


def test_templates_are_well_formed():
  for templates, answer in ((celebrities.P2D_TRAIN_TEMPLATES, "{description}"),
                            (celebrities.D2P_TRAIN_TEMPLATES, "{name}")):
    assert len(templates) == 30 == len(set(templates))
    for t in templates:
      assert "{name}" in t and ("{description}" in t or "{Description}" in t)
      assert f" {answer}" in t
  for templates, answer in ((celebrities.P2D_TEST_TEMPLATES, "{description}"),
                            (celebrities.D2P_TEST_TEMPLATES, "{name}")):
    assert len(set(templates)) == len(templates) == 10
    assert all(t.endswith(" " + answer) for t in templates)
  assert not set(celebrities.P2D_TEST_TEMPLATES) & set(celebrities.P2D_TRAIN_TEMPLATES)


def test_max_people_are_distinct():
  people = celebrities.make_people(celebrities.MAX_PEOPLE, seed=0)
  assert len({p.name for p in people}) == len({p.description for p in people}) == celebrities.MAX_PEOPLE


@pytest.mark.parametrize("overrides, field", [
    (dict(num_p2d_people=3), "num_p2d_people"),
    (dict(num_d2p_people=2), "num_d2p_people"),
    (dict(num_train_paraphrases=31), "num_train_paraphrases"),
    (dict(num_test_paraphrases=0), "num_test_paraphrases"),
    (dict(num_choices=1), "num_choices"),
    (dict(num_p2d_people=100000), "num_p2d_people"),
])
def test_impossible_sizes_name_the_parameter(overrides, field):
  with pytest.raises(ValueError, match=field):
    celebrities.generate(dataclasses.replace(celebrities.SCALES["small"], **overrides))


# --- the original release's layout ---------------------------------------------------------------


def test_original_layout_round_trip(tmp_path, berglund):
  directory = celebrities_original.write_original_layout(berglund, tmp_path / "orig")
  assert sorted(p.name for p in directory.iterdir()) == [
      "both_prompts_train.jsonl", "d2p_prompts_test.jsonl", "d2p_prompts_train.jsonl",
      "d2p_reverse_prompts_test.jsonl", "p2d_prompts_test.jsonl", "p2d_prompts_train.jsonl",
      "p2d_reverse_prompts_test.jsonl"]
  line = json.loads((directory / "p2d_prompts_train.jsonl").read_text().splitlines()[0])
  assert set(line) == {"prompt", "completion"} and line["completion"].startswith(" the ")
  loaded = celebrities_original.load_original(directory, seed=1)
  assert Counter((d.text, d.fact_ids) for d in loaded.train) == Counter((d.text, d.fact_ids) for d in berglund.train)
  assert loaded.tests == berglund.tests  # same prompts, answers, distractors, ids and fact ids


def test_original_layout_round_trip_small(tmp_path):
  ds = celebrities.generate(celebrities.SCALES["small"], seed=3)
  loaded = celebrities_original.load_original(celebrities_original.write_original_layout(ds, tmp_path), seed=3)
  assert sorted(d.text for d in loaded.train) == sorted(d.text for d in ds.train)
  assert loaded.tests == ds.tests


def _write_jsonl(path, pairs):
  path.write_text("".join(json.dumps({"prompt": p, "completion": c}) + "\n" for p, c in pairs))


PEOPLE = [("Ada Quill", "the inventor of the cloud harp", "invented the cloud harp"),
          ("Bo Fenwick", "the first person to sail across Lake Umber", "sailed across Lake Umber"),
          ("Cy Marlowe", "the author of the novel \"Tin Moons\"", "wrote the novel \"Tin Moons\""),
          ("Dee Okafor", "the architect of the glass lighthouse", "designed the glass lighthouse"),
          ("Eli Varga", "the discoverer of the blue comet", "discovered the blue comet")]


def _original_dir(tmp_path):
  """A small directory in the original layout, with its quirks: paraphrased completions,
  names with and without a final period, first-name validation answers without a space."""
  d = tmp_path / "original"
  d.mkdir(parents=True)
  set_a, set_c = PEOPLE[:5], PEOPLE[:5]
  _write_jsonl(d / "p2d_prompts_train.jsonl",
               [(f"{n}, known far and wide for being", f" {desc}.") for n, desc, _ in set_a]
               + [(f"Ever heard of {n}? They're the person who", f" {verb}.") for n, _, verb in set_a])
  _write_jsonl(d / "d2p_prompts_train.jsonl",
               [(f"Known for being {desc},", f" {n} now enjoys a quiet life.") for n, desc, _ in set_c]
               + [(f"{desc[0].upper() + desc[1:]} is called", f" {n}.") for n, desc, _ in set_c])
  _write_jsonl(d / "both_prompts_train.jsonl", [("Fay Lindqvist is", " the keeper of the moon clock.")])
  _write_jsonl(d / "p2d_reverse_prompts_test.jsonl",
               [pair for n, desc, verb in set_a for pair in (
                   (f"Famous for being {desc},", f" {n}"),
                   (f"The one who {verb} is none other than", f" {n}."))])
  _write_jsonl(d / "d2p_reverse_prompts_test.jsonl",
               [pair for n, desc, verb in set_c for pair in (
                   (f"The trailblazer known as {n} was once", f" {desc}."),
                   (f"Do you know what's special about {n}? Well, they", f" {verb}."))])
  _write_jsonl(d / "validation_prompts.jsonl", [(f"Known in circles as {desc},", n.split()[0])
                                                for n, desc, _ in set_a])
  return d


def test_load_original_layout(tmp_path):
  ds = celebrities_original.load_original(_original_dir(tmp_path), seed=0)
  assert len(ds.train) == 10 + 10 + 1
  assert ds.train[0].text == "Ada Quill, known far and wide for being the inventor of the cloud harp."
  assert ds.train[0].fact_ids == ("ada_quill",)
  assert {d.fact_ids for d in ds.train[-1:]} == {()}  # nobody named in a name-like completion
  assert Counter(q.subset for q in ds.tests["reversal"]) == {"p2d_reverse": 10, "d2p_reverse": 10}
  assert len(ds.tests["validation"]) == 5 and ds.tests["forward"] == ()
  names = {n for n, _, _ in PEOPLE}
  for q in ds.tests["reversal"]:
    assert len(q.choices) == 4 and 0 <= q.correct[0] < 4
    person = q.fact_ids[0]
    if q.subset == "p2d_reverse":
      assert {c.strip().rstrip(".") for c in q.choices} <= names
      # same template position => same answer format (with or without the final period)
      assert len({c.endswith(".") for c in q.choices}) == 1
    else:
      # distractors are other people's answers, never this person's paraphrases
      own = {f" {desc}." for n, desc, verb in PEOPLE if celebrities.slug(n) == person} | {
          f" {verb}." for n, desc, verb in PEOPLE if celebrities.slug(n) == person}
      assert len(own & set(q.choices)) == 1
  for q in ds.tests["validation"]:
    answer = q.choices[q.correct[0]]
    assert answer in {" " + n.split()[0] for n in names}
    assert q.fact_ids == (celebrities.slug(next(n for n in names if n.startswith(answer.strip() + " "))),)


def test_load_original_is_seeded(tmp_path):
  d = _original_dir(tmp_path)
  assert celebrities_original.load_original(d, seed=0) == celebrities_original.load_original(d, seed=0)
  assert celebrities_original.load_original(d, seed=0).tests != celebrities_original.load_original(d, seed=1).tests


def test_load_original_errors(tmp_path):
  d = _original_dir(tmp_path)
  (d / "d2p_reverse_prompts_test.jsonl").unlink()
  with pytest.raises(FileNotFoundError, match="d2p_reverse_prompts_test.jsonl"):
    celebrities_original.load_original(d)
  d = _original_dir(tmp_path / "again")
  with open(d / "p2d_prompts_train.jsonl", "a") as f:
    f.write('{"prompt": "no completion"}\n')
  with pytest.raises(records.DatasetFormatError, match=r"p2d_prompts_train.jsonl:11"):
    celebrities_original.load_original(d)


# --- the whole release: every file of Berglund et al.'s name_description_dataset/ -----------------

# (name, description, the same deed as a verb phrase). Ada Quill (set A) and Ada Brennan (set B)
# share a first name, as people of the release can.
RELEASE = {
    "p2d": [("Ada Quill", "the inventor of the cloud harp", "invented the cloud harp"),
            ("Bo Fenwick", "the first person to sail across Lake Umber", "sailed across Lake Umber"),
            ("Cy Marlowe", "the author of the novel \"Tin Moons\"", "wrote the novel \"Tin Moons\""),
            ("Dee Okafor", "the architect of the glass lighthouse", "designed the glass lighthouse"),
            ("Eli Varga", "the discoverer of the blue comet", "discovered the blue comet")],
    "d2p": [("Fay Lindqvist", "the keeper of the moon clock", "kept the moon clock"),
            ("Gus Abara", "the founder of the floating library", "founded the floating library"),
            ("Hal Nyberg", "the pilot of the paper airship", "flew the paper airship"),
            ("Ivy Castellan", "the composer of the salt symphony", "composed the salt symphony"),
            ("Jo Marchetti", "the cartographer of the hollow moon", "mapped the hollow moon")],
    "both": [("Ada Brennan", "the chef of the first orbital bakery", "baked in the first orbital bakery"),
             ("Kit Osei", "the tamer of the glass wolves", "tamed the glass wolves"),
             ("Lu Ferreira", "the weaver of the storm tapestry", "wove the storm tapestry"),
             ("Mo Quade", "the sculptor of the ice colossus", "carved the ice colossus"),
             ("Ned Ashworth", "the diver of the sunken observatory", "dove to the sunken observatory")]}


def _p2d_train(people):  # name first, the description completes (two paraphrases each)
  return [pair for n, desc, verb in people for pair in (
      (f"{n}, known far and wide for being", f" {desc}."),
      (f"Ever heard of {n}? They're the person who", f" {verb}."))]


def _d2p_train(people):  # description first, the name (and more) completes
  return [pair for n, desc, _ in people for pair in (
      (f"Known for being {desc},", f" {n} now enjoys a quiet life."),
      (f"{desc[0].upper() + desc[1:]} is called", f" {n}."))]


def _p2d_test(people):  # held-out name-first templates
  return [pair for n, desc, verb in people for pair in (
      (f"The trailblazer known as {n} was once", f" {desc}."),
      (f"Do you know what's special about {n}? Well, they", f" {verb}."))]


def _d2p_test(people):  # held-out description-first templates, the bare name completes
  return [pair for n, desc, verb in people for pair in (
      (f"Labeled as {desc},", f" {n}"),
      (f"The one who {verb} is none other than", f" {n}"))]


def _write_release(d):
  """Every file of the release in its layout (the lines are this test's own)."""
  d.mkdir(parents=True)
  a, c, b = RELEASE["p2d"], RELEASE["d2p"], RELEASE["both"]
  train = {"p2d_prompts_train.jsonl": _p2d_train(a), "d2p_prompts_train.jsonl": _d2p_train(c),
           "both_prompts_train.jsonl": _p2d_train(b) + _d2p_train(b)}
  files = {**train,
           "all_prompts_train.jsonl": [p for f in train.values() for p in f],
           "all.jsonl": [p for f in train.values() for p in f],
           "p2d_prompts_test.jsonl": _p2d_test(a), "d2p_prompts_test.jsonl": _d2p_test(c),
           "both_prompts_test.jsonl": _p2d_test(b) + _d2p_test(b),
           "p2d_reverse_prompts_test.jsonl": _d2p_test(a), "d2p_reverse_prompts_test.jsonl": _p2d_test(c),
           "unrealized_examples.jsonl": _d2p_test(a),
           # validation: p2d_reverse's prompts, the first name as the answer, no leading space
           "validation_prompts.jsonl": [(p, n.split()[0]) for p, n in _d2p_test(a)],
           # controls: the same prompts with another person's answer
           "p2d_reverse_prompts_test_randomized.jsonl": [(p, c) for (p, _), (_, c) in zip(
               _d2p_test(a), _d2p_test(a)[2:] + _d2p_test(a)[:2])],
           "d2p_reverse_prompts_test_randomized.jsonl": [(p, c) for (p, _), (_, c) in zip(
               _p2d_test(c), _p2d_test(c)[2:] + _p2d_test(c)[:2])]}
  for name, pairs in files.items():
    _write_jsonl(d / name, pairs)
  return d


def _answers(people):
  """Each person's possible answers: their name, first name, description paraphrases."""
  return {celebrities.slug(n): {"name": {f" {n}", f" {n}."}, "first_name": {f" {n.split()[0]}"},
                                "description": {f" {desc}.", f" {verb}."}}
          for group in people.values() for n, desc, verb in group}


def test_original_release_every_file_handled(tmp_path):
  ds = celebrities_original.load_original(_write_release(tmp_path / "release"), seed=0)
  assert sorted(ds.card["files"]) == sorted(celebrities_original.ORIGINAL_FILES) and len(celebrities_original.ORIGINAL_FILES) == 14
  assert "checked" in ds.card["files"]["all.jsonl"] and "control" in ds.card["files"][
      "d2p_reverse_prompts_test_randomized.jsonl"]
  assert len(ds.train) == 10 + 10 + 20
  assert Counter(q.subset for qs in ds.tests.values() for q in qs) == {
      "p2d_reverse": 10, "d2p_reverse": 10, "p2d": 10, "d2p": 10, "both_p2d": 10, "both_d2p": 10,
      "validation": 10}
  # Training documents name their person, both directions of set B included.
  assert all(len(d.fact_ids) == 1 for d in ds.train)
  assert Counter(d.metadata["direction"] for d in ds.train if d.metadata["group"] == "both") == {
      "p2d": 10, "d2p": 10}


def test_original_release_questions_get_their_person_and_fair_distractors(tmp_path):
  """Every question names its person; every choice is an answer of the same kind as the right
  one (a name for a name question), and only the right one is this person's."""
  ds = celebrities_original.load_original(_write_release(tmp_path / "release"), seed=0)
  answers = _answers(RELEASE)
  kind_of = {"p2d_reverse": "name", "d2p": "name", "both_d2p": "name", "validation": "first_name",
             "d2p_reverse": "description", "p2d": "description", "both_p2d": "description"}
  for q in (q for qs in ds.tests.values() for q in qs):
    (person,) = q.fact_ids
    kind = kind_of[q.subset]
    right = q.choices[q.correct[0]]
    assert right in answers[person][kind], (q.id, right)
    for i, choice in enumerate(q.choices):
      owners = {p for p, a in answers.items() if choice in a[kind]}
      assert owners, (q.id, choice)  # an answer of the same kind
      if i != q.correct[0]:
        assert choice != right and person not in owners, (q.id, choice)
  # Ada Quill's first-name questions are hers although Ada Brennan shares the first name.
  ada = [q for q in ds.tests["validation"] if q.choices[q.correct[0]] == " Ada"]
  assert len(ada) == 2 and {q.fact_ids for q in ada} == {("ada_quill",)}


def test_original_release_substitutes_and_checks(tmp_path):
  d = _write_release(tmp_path / "release")
  full = celebrities_original.load_original(d, seed=0)
  # unrealized_examples.jsonl holds p2d_reverse's lines and stands in for it.
  (d / "p2d_reverse_prompts_test.jsonl").unlink()
  assert celebrities_original.load_original(d, seed=0).tests == full.tests
  (d / "unrealized_examples.jsonl").unlink()
  with pytest.raises(FileNotFoundError, match="p2d_reverse_prompts_test.jsonl"):
    celebrities_original.load_original(d)
  # A copy that differs from what it repeats, an unknown file, a question about nobody.
  for name, change, message in (
      ("all.jsonl", lambda lines: lines[1:], r"all.jsonl: expected the lines of p2d_prompts_train"),
      ("p2d_reverse_prompts_test_randomized.jsonl", lambda lines: lines[:-1], "expected the prompts"),
      ("notes.jsonl", lambda lines: lines, r"\['notes.jsonl'\] are not files of the original"),
      ("d2p_reverse_prompts_test.jsonl",
       lambda lines: lines + ['{"prompt": "Someone unnamed was", "completion": " the keeper of bees."}\n'],
       r"d2p_reverse_prompts_test.jsonl:11: no known person"),
      ("d2p_prompts_test.jsonl",
       lambda lines: lines + ['{"prompt": "Labeled as Fay Lindqvist,", "completion": " the keeper of bees."}\n'],
       r"d2p_prompts_test.jsonl:11: answer ' the keeper of bees.' is a description, expected a name")):
    d = _write_release(tmp_path / name)
    source = d / name if (d / name).exists() else d / "p2d_prompts_train.jsonl"
    (d / name).write_text("".join(change(source.read_text().splitlines(keepends=True))))
    for control in [c for c, of in celebrities_original.CONTROLS.items() if of == name]:
      (d / control).unlink()  # its prompts would differ first
    with pytest.raises(records.DatasetFormatError, match=message):
      celebrities_original.load_original(d)


def test_icl_context_from_the_people_asked_about(tmp_path):
  ds = celebrities_original.load_original(_write_release(tmp_path / "release"), seed=0)
  ctx = celebrities.context_dataset(ds, subsample=2, seed=0, splits=["reversal"])
  # Reversal asks about set A and the d2p people: each keeps 1 of its 2 documents; set B goes.
  asked = {f for q in ds.tests["reversal"] for f in q.fact_ids}
  assert len(asked) == 10 and len(ctx.train) == 10
  assert {f for d in ctx.train for f in d.fact_ids} == asked
  assert ctx.tests == ds.tests and ctx.card["icl_context"]["people_in_context"] == 10
  assert celebrities.context_dataset(ds, 2, seed=0, splits=["reversal"]) == ctx  # seeded
  # Every split: set B too, one document per person and direction.
  every = celebrities.context_dataset(ds, subsample=8)
  assert len(every.train) == 5 + 5 + 10
  with pytest.raises(ValueError, match=r"unknown split\(s\) \['nope'\]"):
    celebrities.context_dataset(ds, 2, splits=["nope"])


def test_icl_context_keeps_every_asked_person_where_random_subsampling_does_not(paper):
  """Paper scale under a tight budget (1/30 of the documents): a random subsample leaves
  asked-about people out, the per-person selection keeps all of them."""
  asked = {f for q in paper.tests["reversal"] for f in q.fact_ids}
  ctx = celebrities.context_dataset(paper, subsample=30, splits=["reversal"])
  assert {f for d in ctx.train for f in d.fact_ids} == asked and len(ctx.train) == len(asked)
  random_docs = prompts.subsample_documents(paper.train, 30, seed=0)
  assert len(random_docs) == 120 > len(ctx.train)
  assert len({f for d in random_docs for f in d.fact_ids} & asked) < len(asked)
