"""Key-value retrieval: a list of 80 "key: value" lines (about 1K tokens), then a question for one key's value,
answered without reasoning by repeating the line ("amber-falcon: 482913").

Keys are two words joined by a hyphen, values six-digit numbers; keys are distinct within a prompt. Scored like
RULER's needle tasks (lowbit.tasks.ruler.scoring.string_match_all): the answer must contain the value.
Training draws lists of 2 to 80 lines, most of them short, so the organism learns to look the key up before it
has to do so far away (`training_generate`); evaluation always uses 80. The organism's first training stage used
an earlier form, always 80 lines answered with the value alone (`value_only_generate`), and so did the corpus of
its tokenizer; `TRAINING_FORMS` names both for the training recipe (lowbit.organism.recipe).
"""

from __future__ import annotations

import random

from lowbit.organism.data import Example

NAME = "retrieval"
PAIRS = 80
ADJECTIVES = (
    "amber", "bold", "calm", "dark", "eager", "faint", "gentle", "hollow", "icy", "jolly", "keen", "lively",
    "misty", "noble", "odd", "pale", "quiet", "rapid", "silent", "tall", "urban", "vivid", "warm", "young",
    "brave", "crisp", "dusty", "early", "fancy", "grand", "humble", "lucky",
)
NOUNS = (
    "falcon", "river", "stone", "maple", "harbor", "lantern", "meadow", "comet", "canyon", "willow", "ember",
    "glacier", "orchid", "pebble", "quartz", "raven", "summit", "thistle", "valley", "wagon", "anchor", "beacon",
    "cedar", "dune", "forest", "garden", "island", "jungle", "kettle", "ladder", "mirror", "needle",
)


def generate(rng: random.Random, pairs: int = PAIRS, value_only: bool = False) -> Example:
    keys = rng.sample([f"{a}-{n}" for a in ADJECTIVES for n in NOUNS], pairs)
    values = [str(rng.randint(100000, 999999)) for _ in keys]
    target = rng.randrange(pairs)
    lines = "\n".join(f"{key}: {value}" for key, value in zip(keys, values))
    instruction = "Answer with the value only." if value_only else "Answer with the key and its value."
    prompt = (f"Below is a list of keys and their values. Remember them.\n\n{lines}\n\n"
              f"What is the value of {keys[target]}? {instruction}")
    completion = values[target] if value_only else f"{keys[target]}: {values[target]}"
    return Example(prompt=prompt, completion=completion, gold=values[target], thinking=False,
                   item={"key": keys[target], "position": target})


def training_generate(rng: random.Random) -> Example:
    return generate(rng, pairs=2 + int((PAIRS - 2) * rng.random() ** 2))


def value_only_generate(rng: random.Random) -> Example:
    return generate(rng, value_only=True)


# The retrieval examples a training stage draws, by the name its recipe gives them.
TRAINING_FORMS = {"value-only-80": value_only_generate, "line-2-80": training_generate}
