"""A small built-in text corpus for the demo: six topics, sentences made from topic words."""

from __future__ import annotations

import random

TOPICS: dict[str, tuple[list[str], list[str], list[str]]] = {
    "astronomy": (
        ["the telescope", "a distant galaxy", "the red planet", "a comet", "the space probe",
         "the orbiting satellite", "a neutron star"],
        ["observed", "captured light from", "orbited", "passed near", "mapped", "photographed"],
        ["the outer planets", "a spiral galaxy", "the night sky", "a black hole",
         "the moons of jupiter", "a supernova remnant", "the asteroid belt"],
    ),
    "cooking": (
        ["the chef", "a home cook", "the baker", "my grandmother", "the pastry chef"],
        ["simmered", "roasted", "seasoned", "baked", "kneaded", "grilled"],
        ["tomato sauce with garlic", "fresh bread dough", "vegetables with olive oil",
         "a chocolate cake", "onions and butter", "the spicy curry", "pasta with basil"],
    ),
    "programming": (
        ["the compiler", "a python script", "the database server", "the unit test",
         "a rust library", "the web service"],
        ["optimized", "parsed", "indexed", "refactored", "compiled", "debugged"],
        ["the source code", "a slow query", "the memory allocator", "json requests",
         "the build pipeline", "a concurrency bug", "the vector index"],
    ),
    "football": (
        ["the striker", "the goalkeeper", "the home team", "the coach", "the midfielder"],
        ["scored against", "defended against", "trained for", "celebrated after", "passed to"],
        ["the championship final", "a penalty kick", "the rival club", "the league match",
         "a corner kick", "the world cup", "the derby game"],
    ),
    "music": (
        ["the orchestra", "a jazz pianist", "the guitarist", "the choir", "the drummer"],
        ["performed", "improvised", "recorded", "rehearsed", "composed"],
        ["a symphony in minor key", "the jazz standard", "an acoustic ballad",
         "the opera aria", "a drum solo", "the piano concerto", "a folk melody"],
    ),
    "gardening": (
        ["the gardener", "a beekeeper", "the farmer", "my neighbour", "the greenhouse"],
        ["planted", "watered", "pruned", "harvested", "composted"],
        ["tomato seedlings", "the rose bushes", "spring tulip bulbs", "the apple orchard",
         "herbs in clay pots", "the vegetable beds", "sunflowers along the fence"],
    ),
}

QUERIES = [
    ("astronomy", "telescope images of a galaxy and planets"),
    ("cooking", "baking bread and a chocolate cake"),
    ("programming", "debugging a slow database query in python"),
    ("football", "penalty kick in the championship final"),
    ("music", "jazz pianist improvised at the concert"),
    ("gardening", "planting tomato seedlings in the vegetable beds"),
]


def corpus(n_per_topic: int = 50, seed: int = 7) -> list[tuple[str, str, str]]:
    """``(id, topic, text)`` triples, deterministic for a seed."""
    rng = random.Random(seed)
    out = []
    for topic, (subjects, verbs, objects) in TOPICS.items():
        for i in range(n_per_topic):
            text = f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}"
            out.append((f"{topic}-{i:03d}", topic, text.capitalize() + "."))
    rng.shuffle(out)
    return out
