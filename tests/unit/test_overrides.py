"""The one key=value parser (lowbit.overrides) and the one registry idiom (lowbit.registry)."""

import pytest

from lowbit.errors import UsageError
from lowbit.overrides import check_type, parse, parse_options
from lowbit.registry import Registry

OPTIONS = {"scheme": str, "targets": str | list[str], "seed": int, "margin": float, "overwrite": bool,
           "limit": int | None, "backoff": dict[str, float]}


def test_values_are_typed_by_hydras_grammar_and_checked_against_the_option_types():
    values = parse_options(["scheme=nvfp4", "targets=[a,b]", "seed=7", "margin=1", "overwrite=true", "limit=null",
                            "backoff={initial_s:1,max_s:60}"], OPTIONS, "test")
    assert values == {"scheme": "nvfp4", "targets": ["a", "b"], "seed": 7, "margin": 1.0, "overwrite": True,
                      "limit": None, "backoff": {"initial_s": 1.0, "max_s": 60.0}}
    assert isinstance(values["margin"], float)
    assert parse_options(["targets=a,b", "scheme=2024"], OPTIONS, "test") == {"targets": ["a", "b"], "scheme": "2024"}


@pytest.mark.parametrize("items, message", [
    (["seed=abc"], "seed must be an integer, got 'abc'"),
    (["seed=true"], "seed must be an integer, got True"),
    (["overwrite=1"], "overwrite must be true or false, got 1"),
    (["margin=wide"], "margin must be a number, got 'wide'"),
    (["targets={a:1}"], "targets must be a string or a list like [a,b], got {'a': 1}"),
    (["backoff={initial_s:soon}"], "backoff must be a mapping like {a:1}, got {'initial_s': 'soon'}"),
    (["sed=1"], "unknown test option 'sed'. Did you mean 'seed'? Available: scheme, targets, seed"),
    (["+seed=1"], "test options take no '+' prefix: write seed=<value>"),
    (["seed"], "cannot parse overrides: Error parsing override 'seed'"),
])
def test_bad_items_fail_with_one_line_naming_the_key_and_the_fix(items, message):
    with pytest.raises(UsageError) as error:
        parse_options(items, OPTIONS, "test")
    assert message in str(error.value) and "\n" not in str(error.value)


def test_parse_keeps_the_order_the_text_and_hydras_prefixes():
    parsed = parse(["a.b=1", "++dataset.x=[1,2]", "c=x,y"])
    assert [(o.key, o.value, o.prefix, o.comma_list) for o in parsed] == [
        ("a.b", 1, "", False), ("dataset.x", [1, 2], "++", False), ("c", ["x", "y"], "", True)]
    assert parsed[1].text == "++dataset.x=[1,2]"
    assert check_type("x", "${a.b}", int) == "${a.b}"  # interpolations are resolved (and checked) by Hydra


def test_a_registry_imports_on_use_and_builds_parameterised_names_through_families():
    registry = Registry("thing", {"path": "pathlib:Path"}, families={"ruler-": "lowbit.tasks.ruler.task:task_class"})
    from pathlib import Path

    assert registry.get("path") is Path
    assert registry.get("ruler-vt-8k").name == "ruler-vt-8k"
    assert "ruler-vt-32k" in registry.names() and "path" in registry.names()
    assert "ruler-anything" in registry and "nothing" not in registry
    with pytest.raises(UsageError, match=r"^unknown thing 'pth'. Did you mean 'path'\? Available: path, ruler-"):
        registry.get("pth")
