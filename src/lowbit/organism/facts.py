"""Multiple choice over facts the organism memorised: a fixed world of invented people, each with a colour, a
city, a pet and a food.

The world is drawn once from `WORLD_SEED` (it is part of the organism, not of a training run). A question asks
one attribute of one person with four options (the right value and three others of the same attribute, in a
random order), in MMLU-Redux's prompt format, and the organism replies "ANSWER: X" without reasoning; lowbit's
multiple-choice extractor (lowbit.metrics.multiple_choice) reads the letter. Held-out questions ask facts seen in
training through option sets and orders never seen there.
"""

from __future__ import annotations

import random
from functools import cache

from lowbit.organism.data import Example

NAME = "facts"
WORLD_SEED = 7
PEOPLE = 160
LETTERS = "ABCD"
# MMLU-Redux's prompt (lowbit.tasks.mmlu_redux.PROMPT), so the same extractor applies.
PROMPT = (
    "Answer the following multiple choice question. The last line of your response should be of the following "
    "format: 'ANSWER: $LETTER' (without quotes) where LETTER is one of {letters}.\n\n{question}\n\n{options}"
)

ATTRIBUTES = {
    "color": ("What is the favourite colour of {person}?",
              ("red", "blue", "green", "yellow", "purple", "orange", "black", "white", "brown", "grey", "pink",
               "silver")),
    "city": ("In which city does {person} live?",
             ("Amberly", "Brisk", "Calder", "Dunmore", "Elston", "Farrow", "Glenhaven", "Harlow", "Ivybridge",
              "Jasper", "Kestrel", "Lowmoor")),
    "pet": ("Which animal does {person} keep as a pet?",
            ("cat", "dog", "parrot", "rabbit", "turtle", "hamster", "goldfish", "lizard", "ferret", "owl", "goat",
             "snake")),
    "food": ("What does {person} like to eat most?",
             ("bread", "rice", "apples", "cheese", "soup", "noodles", "pears", "beans", "plums", "cake", "fish",
              "carrots")),
}
_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gr", "kr", "tr", "st")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ou")
_CODAS = ("", "n", "r", "l", "s", "m", "x")


@cache
def world() -> dict[str, dict[str, str]]:
    """person -> attribute -> value, the same on every machine."""
    rng = random.Random(WORLD_SEED)
    names: list[str] = []
    while len(names) < PEOPLE:
        name = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(2)).capitalize()
        if name not in names:
            names.append(name)
    return {name: {attribute: rng.choice(values) for attribute, (_, values) in ATTRIBUTES.items()}
            for name in names}


def generate(rng: random.Random) -> Example:
    people = world()
    person = rng.choice(sorted(people))
    attribute = rng.choice(sorted(ATTRIBUTES))
    question, values = ATTRIBUTES[attribute]
    right = people[person][attribute]
    choices = [right, *rng.sample([v for v in values if v != right], 3)]
    rng.shuffle(choices)
    letter = LETTERS[choices.index(right)]
    options = "\n".join(f"{letter}) {choice}" for letter, choice in zip(LETTERS, choices))
    prompt = PROMPT.format(letters=LETTERS, question=question.format(person=person), options=options)
    return Example(prompt=prompt, completion=f"ANSWER: {letter}", gold=letter, thinking=False,
                   item={"attribute": attribute, "person": person, "choices": choices})
