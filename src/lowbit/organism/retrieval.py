"""Key-value retrieval: a list of 80 "key: value" lines (about 1K tokens), then a question for one key's value,
answered without reasoning by repeating the line ("amber-falcon: 482913").

Keys are two words joined by a hyphen, values six-digit numbers; keys are distinct within a prompt. Scored like
RULER's needle tasks (lowbit.tasks.ruler.scoring.string_match_all): the answer must contain the value.
Training draws lists of 2 to 80 lines, most of them short, so the organism learns to look the key up before it
has to do so far away (`training_generate`); evaluation always uses 80.
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


def generate(rng: random.Random, pairs: int = PAIRS) -> Example:
    keys = rng.sample([f"{a}-{n}" for a in ADJECTIVES for n in NOUNS], pairs)
    values = [str(rng.randint(100000, 999999)) for _ in keys]
    target = rng.randrange(pairs)
    lines = "\n".join(f"{key}: {value}" for key, value in zip(keys, values))
    prompt = (f"Below is a list of keys and their values. Remember them.\n\n{lines}\n\n"
              f"What is the value of {keys[target]}? Answer with the key and its value.")
    return Example(prompt=prompt, completion=f"{keys[target]}: {values[target]}", gold=values[target],
                   thinking=False, item={"key": keys[target], "position": target})


def training_generate(rng: random.Random) -> Example:
    return generate(rng, pairs=2 + int((PAIRS - 2) * rng.random() ** 2))
