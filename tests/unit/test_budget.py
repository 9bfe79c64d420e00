import pytest

from lowbit.errors import UsageError
from lowbit.predictors.base import GenerationStats, budget_prompts, request_seed


def test_each_prompt_gets_what_its_length_leaves():
    stats = GenerationStats()
    planned = budget_prompts([[1] * 3, [2] * 9], 10, overflow="skip", reserve=4, stats=stats)
    assert [p.budget for p in planned] == [7, 1]
    assert stats.prompts_over_limit == 0


def test_skip_gives_no_budget_and_counts_the_prompt():
    stats = GenerationStats()
    planned = budget_prompts([[1] * 10, [2] * 12], 10, overflow="skip", reserve=4, stats=stats)
    assert [p.budget for p in planned] == [0, 0] and planned[1].token_ids == [2] * 12
    assert stats.prompts_over_limit == 2 and stats.prompt_tokens_truncated == 0


def test_left_truncate_keeps_the_end_of_the_prompt_and_leaves_the_reserve():
    stats = GenerationStats()
    (planned,) = budget_prompts([list(range(12))], 10, overflow="left_truncate", reserve=4, stats=stats)
    assert planned.token_ids == list(range(6, 12)) and planned.budget == 4
    assert stats.prompts_over_limit == 1 and stats.prompt_tokens_truncated == 6


@pytest.mark.parametrize("overflow, reserve", [("drop", 4), ("left_truncate", 0), ("left_truncate", 10)])
def test_bad_policies_are_usage_errors(overflow, reserve):
    with pytest.raises(UsageError):
        budget_prompts([[1] * 12], 10, overflow=overflow, reserve=reserve, stats=GenerationStats())


def test_request_seeds_depend_on_seed_and_prompt_only():
    assert request_seed(1, [5, 6]) == request_seed(1, [5, 6])
    assert len({request_seed(1, [5, 6]), request_seed(2, [5, 6]), request_seed(1, [6, 5])}) == 3
    assert 0 <= request_seed(123, [1]) < 2**31
