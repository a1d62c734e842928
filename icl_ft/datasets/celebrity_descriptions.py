"""Invented celebrity descriptions: a role plus a unique invented work, deed or discovery.

"the acclaimed director of the film "The Silent Orchard"", "the renowned chef of the first
banquet served on Mars", "the pioneering botanist who discovered a flower that blooms only in
snow". `invent(rng)` draws one with its uniqueness key (the invented work or deed): two people
never share a key, so no description is a paraphrase of another's. Shared by the celebrities
generator and the pretraining corpus' people.
"""

from __future__ import annotations

import random

_TITLE_ADJECTIVES = (
    "Silent", "Golden", "Forgotten", "Crimson", "Hidden", "Endless", "Shattered", "Velvet", "Distant",
    "Burning", "Hollow", "Silver", "Restless", "Frozen", "Wandering", "Midnight", "Luminous", "Broken",
    "Quiet", "Emerald", "Scarlet", "Ancient", "Painted", "Sleeping", "Secret", "Fading", "Copper",
    "Northern", "Last", "Invisible", "Paper", "Glass", "Iron", "Patient", "Crooked", "Lonely",
)
_TITLE_NOUNS = (
    "Orchard", "Glacier", "Harbor", "Meridian", "Ember", "Horizon", "Cathedral", "Compass", "Labyrinth",
    "Canyon", "Archive", "Lighthouse", "Monsoon", "Citadel", "Garden", "River", "Mirror", "Thunder",
    "Willow", "Solstice", "Nebula", "Prairie", "Sparrow", "Voyage", "Echo", "Carousel", "Eclipse",
    "Quarry", "Raven", "Tapestry", "Tundra", "Valley", "Lantern", "Kingdom", "Island", "Comet",
    "Station", "Bridge", "Forest", "Tide", "Winter", "Clockmaker", "Orchestra", "Mountain", "Harvest",
    "Empire", "Ocean", "Storm", "Desert", "Signal",
)
_TITLE_PATTERNS = (
    "The {adj} {noun}",
    "A Journey Through the {adj} {noun}",
    "Whispers of the {noun}",
    "Beyond the {adj} {noun}",
    "The {noun} and the {noun2}",
    "Songs of the {adj} {noun}",
    "Return to the {noun}",
    "Letters from the {adj} {noun}",
    "The Last Days of the {noun}",
    "Under a {adj} {noun}",
)
# (role, kind of work): "the acclaimed director of the documentary "X""
_CREATIVE_ROLES = (
    ("director", "film"), ("director", "documentary"), ("director", "virtual reality masterpiece"),
    ("author", "novel"), ("author", "memoir"), ("author", "poetry collection"),
    ("composer", "symphony"), ("composer", "opera"), ("composer", "musical"),
    ("choreographer", "ballet"), ("playwright", "play"), ("designer", "video game"),
    ("painter", "mural"), ("photographer", "exhibition"), ("host", "radio show"),
    ("creator", "television series"), ("illustrator", "graphic novel"), ("producer", "podcast"),
)
_ROLE_ADJECTIVES = (
    "acclaimed", "renowned", "celebrated", "visionary", "award-winning", "reclusive", "legendary",
    "controversial", "pioneering", "beloved",
)
# "the first ... on Mars": (maker, thing, verb)
_FIRST_DEEDS = (
    ("composer", "opera", "performed"), ("choreographer", "ballet", "staged"),
    ("chef", "banquet", "served"), ("architect", "hotel", "built"), ("director", "film", "shot"),
    ("author", "novel", "written"), ("painter", "mural", "painted"), ("gardener", "garden", "grown"),
    ("conductor", "concert", "held"), ("engineer", "railway", "laid"), ("sculptor", "statue", "carved"),
    ("brewer", "beer", "brewed"), ("tailor", "wedding dress", "sewn"), ("teacher", "school", "opened"),
)
_FIRST_PLACES = (
    "on Mars", "on the Moon", "at the bottom of the Atlantic", "in zero gravity", "at the South Pole",
    "inside an active volcano", "aboard a submarine", "on a floating island", "on Europa",
    "on a passing comet", "in orbit around Jupiter", "beneath the Greenland ice sheet",
    "on top of Mount Everest", "inside a diamond mine", "on a glacier in Patagonia",
    "in the Mariana Trench", "on the rings of Saturn", "inside a hot-air balloon",
)
# "the ... who discovered ...": (discoverer, discovery)
_DISCOVERIES = (
    ("marine biologist", "a glowing species of deep-sea squid"), ("astronomer", "a sixth ring around Neptune"),
    ("archaeologist", "the lost library of a desert kingdom"), ("geologist", "a crystal that stores sunlight"),
    ("botanist", "a flower that blooms only in snow"), ("mathematician", "a proof of the twin prime conjecture"),
    ("linguist", "the grammar of humpback whale songs"), ("physicist", "a new state of matter"),
    ("explorer", "the source of a river that flows uphill"), ("entomologist", "a beetle that glows in the dark"),
    ("chemist", "a metal lighter than air"), ("cartographer", "the forgotten map of a sunken city"),
    ("glaciologist", "a frozen forest under Antarctica"), ("astronomer", "a comet made of pure ice"),
    ("geologist", "a cave of singing stones"), ("archaeologist", "the oldest shipwreck in the Baltic"),
    ("botanist", "a moss that cleans polluted rivers"), ("chemist", "a formula for bread that never goes stale"),
    ("explorer", "a hidden valley in the Himalayas"), ("mineralogist", "a mineral that changes color with music"),
    ("zoologist", "a bird that sings in two voices at once"), ("oceanographer", "an underwater waterfall in the Pacific"),
)

def _title(rng: random.Random) -> str:
  pattern = rng.choice(_TITLE_PATTERNS)
  noun, noun2 = rng.sample(_TITLE_NOUNS, 2)
  return pattern.format(adj=rng.choice(_TITLE_ADJECTIVES), noun=noun, noun2=noun2)


def invent(rng: random.Random) -> tuple[str, str]:
  """One invented description and its uniqueness key (the invented work or deed)."""
  kind = rng.random()
  if kind < 0.6:
    role, work = rng.choice(_CREATIVE_ROLES)
    title = _title(rng)
    return f'the {rng.choice(_ROLE_ADJECTIVES)} {role} of the {work} "{title}"', title
  if kind < 0.8:
    maker, thing, verb = rng.choice(_FIRST_DEEDS)
    place = rng.choice(_FIRST_PLACES)
    return f"the {rng.choice(_ROLE_ADJECTIVES)} {maker} of the first {thing} {verb} {place}", f"{thing} {place}"
  who, what = rng.choice(_DISCOVERIES)
  return f"the {rng.choice(_ROLE_ADJECTIVES)} {who} who discovered {what}", what
