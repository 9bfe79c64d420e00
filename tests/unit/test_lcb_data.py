"""LiveCodeBench records: the plain-data unpickler, test-case decoding, the date window and the loader."""

from __future__ import annotations

import base64
import json
import os
import pickle
import zlib
from pathlib import Path

import pytest

from lowbit.errors import UsageError
from lowbit.tasks import make_task
from lowbit.tasks.livecodebench import problem_of
from lowbit.tasks.livecodebench.data import (RELEASE_FILES, UnsafePickleError, decode_tests, func_name, in_window,
                                             safe_unpickle)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "livecodebench"


def encoded(value) -> str:
    return base64.b64encode(zlib.compress(pickle.dumps(value))).decode()


class PlantsAFile:
    """Unpickling this runs open(path, 'w'): what a malicious dataset file could do with plain pickle.load."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_plain_data_round_trips():
    value = {"a": [1, 2.5, True, None, "x", b"y"], "b": (3, 4)}
    assert safe_unpickle(pickle.dumps(value)) == value


def test_malicious_pickle_is_refused_without_running(tmp_path):
    target = tmp_path / "planted"
    payload = pickle.dumps([PlantsAFile(str(target))])
    with pytest.raises(UnsafePickleError, match=r"refusing to unpickle (io|builtins)\.open"):
        safe_unpickle(payload)
    assert not target.exists()
    system_call = b"cos\nsystem\n(S'touch " + str(target).encode() + b"'\ntR."  # protocol 0: os.system(...)
    with pytest.raises(UnsafePickleError, match="os.system|posix.system"):
        safe_unpickle(system_call)
    assert not target.exists()


def test_malicious_private_tests_give_a_clear_usage_error(tmp_path):
    target = tmp_path / "planted"
    field = base64.b64encode(zlib.compress(pickle.dumps(PlantsAFile(str(target))))).decode()
    with pytest.raises(UsageError, match=r"private test cases: refusing to unpickle (io|builtins)\.open"):
        decode_tests(field, "problem x")
    assert not target.exists() and not os.path.exists("planted")


def test_decodes_json_and_compressed_test_cases():
    tests = [{"input": "1\n", "output": "2\n", "testtype": "stdin"}]
    assert decode_tests(json.dumps(tests), "p") == decode_tests(encoded(json.dumps(tests)), "p")
    assert decode_tests(encoded(json.dumps(tests)), "p")[0].output == "2\n"
    with pytest.raises(UsageError, match="neither JSON nor"):
        decode_tests("not base64 at all!", "p")
    with pytest.raises(UsageError, match="lacks input/output"):
        decode_tests(json.dumps([{"input": "1"}]), "p")


def test_release_files_and_func_name():
    assert RELEASE_FILES["release_v5"] == ["test.jsonl", "test2.jsonl", "test3.jsonl", "test4.jsonl", "test5.jsonl"]
    assert func_name({"metadata": '{"func_name": "twoSum"}'}) == "twoSum"
    assert func_name({"metadata": "{}"}) is None


def test_date_window_is_inclusive():
    records = [{"contest_date": d} for d in ("2024-09-30T23:00:00", "2024-10-01T00:00:00", "2025-02-01T18:30:00",
                                              "2025-02-02T00:00:00")]
    kept = in_window(records, "2024-10-01", "2025-02-01")
    assert [r["contest_date"][:10] for r in kept] == ["2024-10-01", "2025-02-01"]
    assert len(in_window(records, None, None)) == 4


def test_loader_filters_fixture_problems_by_date_and_builds_prompts():
    task = make_task("livecode_v5")
    samples = task.load(str(FIXTURES))
    every = make_task("livecode_v5", {"start_date": None, "end_date": None}).load(str(FIXTURES))
    assert len(every) == 20
    assert {s.id for s in samples} == {s.id for s in every
                                       if "2024-10-01" <= s.item["contest_date"][:10] <= "2025-02-01"}
    leetcode = next(s for s in every if s.id == "9001")
    assert "```python\nclass Solution:\n    def twoSum(self" in leetcode.messages[0]["content"]
    assert problem_of(leetcode.item).mode == "functional" and problem_of(leetcode.item).func_name == "twoSum"


def test_bad_options_and_missing_data(tmp_path):
    with pytest.raises(UsageError, match="start_date"):
        make_task("livecode_v5", {"start_date": "October"})
    with pytest.raises(UsageError, match="no .jsonl files"):
        make_task("livecode_v5").load(str(tmp_path))
    (tmp_path / "test.jsonl").write_text(json.dumps({"question_id": "x"}) + "\n")
    with pytest.raises(UsageError, match="lacks"):
        make_task("livecode_v5").load(str(tmp_path))
