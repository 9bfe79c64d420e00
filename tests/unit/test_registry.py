"""Every registered benchmark, chat format, predictor and command is complete and reachable."""

import dataclasses
import inspect

import pytest

from lowbit.chat import chat_formats
from lowbit.cli import COMMANDS
from lowbit.command import Command
from lowbit.config import compose_config, group_choices
from lowbit.predictors.base import PREDICTORS, predictor_names
from lowbit.predictors.options import OPTIONS, defaults, predictor_options
from lowbit.registry import import_target
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
        blocks = compose_config([f"model={model}"]).model.dataset_configs
        assert {block["template"] for block in blocks.values()} <= set(chat_formats())


def test_predictor_options_are_typed_once_and_default_only_in_their_yaml():
    assert predictor_names() == group_choices("predictor") == sorted(OPTIONS)
    for name in predictor_names():
        assert set(defaults(name)) == {f.name for f in dataclasses.fields(OPTIONS[name])}
        assert dataclasses.asdict(predictor_options(name, {})) == defaults(name)
        constructor = inspect.signature(PREDICTORS.get(name).__init__).parameters.values()
        assert all(p.default is inspect.Parameter.empty for p in constructor), name  # no second set of defaults


def test_every_command_is_declared_once_with_an_importable_handler():
    for name in COMMANDS.names():
        command = COMMANDS.get(name)
        assert isinstance(command, Command) and command.name == name
        for leaf in command.actions or (command,):
            assert callable(import_target(leaf.run)), leaf.name
