"""The text analysis IFEval's checkers rely on: words, sentences, word tokens and language, offline and deterministic.

- Words are runs of `\\w` characters (what the reference counts with nltk's `RegexpTokenizer(r"\\w+")`).
- Sentences come from NLTK's pretrained English Punkt model, read from the `punkt_tab` data package in a local
  directory (`dataset.nltk_data=<dir>`, else `$NLTK_DATA`, else NLTK's own search path). Nothing is downloaded:
  a missing package is a `UsageError` that names the fix.
- Word tokens (for counting all-capital words) follow `nltk.word_tokenize`: Punkt sentences, then NLTK's
  improved Treebank word tokenizer on each sentence.
- Language detection is `langdetect` with a private detector factory seeded with 0, so the same text always gets
  the same language (langdetect's module-level `detect` is randomized unless its global seed is set).
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

from lowbit.errors import UsageError

PUNKT_LANGUAGE = "english"
PUNKT_SUBDIR = Path("tokenizers") / "punkt_tab" / PUNKT_LANGUAGE
PUNKT_FILES = ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab")
LANGDETECT_SEED = 0

_WORD = re.compile(r"\w+")


def count_words(text: str) -> int:
    return len(_WORD.findall(text))


def nltk_search_path(configured: str | None) -> list[Path]:
    """Directories searched for NLTK data: only the configured one when given, else $NLTK_DATA then NLTK's path."""
    if configured:
        return [Path(configured).expanduser()]
    from_env = [Path(p) for p in os.environ.get("NLTK_DATA", "").split(os.pathsep) if p]
    import nltk.data

    return list(dict.fromkeys([*from_env, *(Path(p) for p in nltk.data.path)]))


def find_punkt_dir(configured: str | None) -> Path:
    """The directory of the English Punkt parameters (punkt_tab), or a UsageError saying how to provide them."""
    searched = nltk_search_path(configured)
    for root in searched:
        candidate = root / PUNKT_SUBDIR
        if all((candidate / name).is_file() for name in PUNKT_FILES):
            return candidate
    where = ", ".join(str(p) for p in searched) or "(nowhere: NLTK_DATA is empty)"
    raise UsageError(
        f"IFEval counts sentences with NLTK's {PUNKT_SUBDIR} data, which is not on this machine: pass "
        "dataset.nltk_data=<dir holding tokenizers/punkt_tab> or set $NLTK_DATA=<that dir> (fetch it on a connected "
        f"machine: python -m nltk.downloader -d <dir> punkt_tab); searched {where}")


@functools.cache
def _sentence_tokenizer(punkt_dir: Path):
    from nltk.tokenize.punkt import PunktSentenceTokenizer, load_punkt_params

    return PunktSentenceTokenizer(load_punkt_params(str(punkt_dir)))


@functools.cache
def _word_tokenizer():
    from nltk.tokenize.destructive import NLTKWordTokenizer

    return NLTKWordTokenizer()


@functools.cache
def _language_detector_factory():
    from langdetect.detector_factory import PROFILES_DIRECTORY, DetectorFactory

    factory = DetectorFactory()
    factory.load_profile(PROFILES_DIRECTORY)
    factory.set_seed(LANGDETECT_SEED)
    return factory


class TextAnalyzer:
    """Sentence splitting, word tokenization and language detection with data from one Punkt directory."""

    def __init__(self, punkt_dir: Path):
        self.punkt_dir = Path(punkt_dir)

    @classmethod
    def from_option(cls, nltk_data: str | None) -> TextAnalyzer:
        return cls(find_punkt_dir(nltk_data))

    def sentences(self, text: str) -> list[str]:
        return _sentence_tokenizer(self.punkt_dir).tokenize(text)

    def count_sentences(self, text: str) -> int:
        return len(self.sentences(text))

    def word_tokens(self, text: str) -> list[str]:
        """Tokens as `nltk.word_tokenize(text)` gives them (hyphenated words stay one token)."""
        tokenizer = _word_tokenizer()
        return [token for sentence in self.sentences(text) for token in tokenizer.tokenize(sentence)]

    @staticmethod
    def language(text: str) -> str | None:
        """The ISO 639-1 code langdetect picks, or None when the text has no letters to judge by."""
        from langdetect.lang_detect_exception import LangDetectException

        detector = _language_detector_factory().create()
        detector.append(text)
        try:
            return detector.detect()
        except LangDetectException:
            return None
