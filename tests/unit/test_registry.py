"""Every registered benchmark and chat format is complete and reachable from the configs."""

import dataclasses

import pytest

from lowbit.chat import chat_formats
from lowbit.config import group_choices, resolve_eval
from lowbit.tasks import get_task_class, task_names


@pytest.mark.parametrize("name", task_names())
def test_registered_tasks_are_complete(name):
    cls = get_task_class(name)
    assert cls.name == name
    assert isinstance(cls.version, str) and cls.version
    assert dataclasses.is_dataclass(cls.Options)
    option_names = {f.name for f in dataclasses.fields(cls.Options)}
    assert cls.non_prompt_options <= option_names
    assert isinstance(cls.headline_metric, str) and cls.headline_metric


def test_every_sampling_block_names_a_known_chat_format():
    for model in group_choices("model"):
        blocks = resolve_eval(["output_dir=/tmp/x", f"model={model}"]).resolved["model"]["dataset_configs"]
        assert {block["template"] for block in blocks.values()} <= set(chat_formats())
