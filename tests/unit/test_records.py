import json

import pytest

from lowbit.records import (Completion, JsonlAppender, Prediction, iter_jsonl, legacy_id, write_json_atomic,
                            write_jsonl_atomic)


def test_appender_repairs_a_torn_last_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b"}\n{"id": "c", "tru')  # a crash in mid-write
    assert [r["id"] for r in iter_jsonl(path)] == ["a", "b"]
    with JsonlAppender(path) as writer:
        writer.append([{"id": "c"}, {"id": "d"}])
    assert [r["id"] for r in iter_jsonl(path)] == ["a", "b", "c", "d"]
    assert path.read_text().endswith("\n")


def test_corruption_before_the_last_line_is_an_error(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "a"}\nnot json\n{"id": "b"}\n')
    with pytest.raises(ValueError, match="line 2"):
        list(iter_jsonl(path))


def test_atomic_writes_leave_no_temp_files(tmp_path):
    write_json_atomic(tmp_path / "m.json", {"x": 1})
    write_jsonl_atomic(tmp_path / "s.jsonl", [{"id": 1}, {"id": 2}])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "s.jsonl"]
    assert json.loads((tmp_path / "m.json").read_text()) == {"x": 1}


def test_prediction_round_trip():
    completion = Completion(text="<think>hm</think>ANSWER: B", answer="ANSWER: B", reasoning="hm",
                            finish_reason="stop", prompt_tokens=10, completion_tokens=7)
    prediction = Prediction(id="x/1", prompt="p", item={"q": 1}, completions=[completion])
    row = prediction.to_json()
    assert row["preds"] == ["ANSWER: B"]
    assert Prediction.from_json(json.loads(json.dumps(row))) == prediction


def test_legacy_lines_get_stable_ids_and_unknown_finish_reasons():
    row = {"prompt": "p", "item": {"question": "q", "choices": ["a"]}, "preds": ["ANSWER: A", "B"]}
    prediction = Prediction.from_json(row)
    assert prediction.id == legacy_id(row["item"], "p") == Prediction.from_json(dict(row)).id
    assert prediction.preds == ["ANSWER: A", "B"]
    assert [c.finish_reason for c in prediction.completions] == [None, None]
    assert not any(c.truncated for c in prediction.completions)
