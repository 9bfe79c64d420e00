from lowbit.chat import get_chat_format
from lowbit.records import Generation

THINKING_PROMPT = "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n"
NON_THINKING_PROMPT = THINKING_PROMPT + "<think>\n\n</think>\n\n"
PROMPT_OPENING_THINK = THINKING_PROMPT + "<think>\n"  # Qwen3 *-Thinking-2507 templates


def split(name, prompt, text, finish="stop"):
    return get_chat_format(name).split(prompt, Generation(text, finish, 10, 5))


def test_qwen3_reasoning_is_split_from_the_answer():
    c = split("qwen3", THINKING_PROMPT, "<think>\nA is wrong. ANSWER: A?\n</think>\n\nANSWER: C")
    assert c.answer == "ANSWER: C" and c.reasoning == "A is wrong. ANSWER: A?"
    assert not c.truncated and not c.ended_in_reasoning


def test_qwen3_completion_stopping_inside_reasoning_has_no_answer():
    c = split("qwen3", THINKING_PROMPT, "<think>\nLet me think. The answer is B, ANSWER: B", finish="length")
    assert c.answer == "" and c.ended_in_reasoning and c.truncated
    assert "ANSWER: B" in c.reasoning


def test_qwen3_think_opened_by_the_prompt():
    c = split("qwen3", PROMPT_OPENING_THINK, "reasoning only, ANSWER: D")
    assert c.answer == "" and c.ended_in_reasoning
    c = split("qwen3", PROMPT_OPENING_THINK, "some reasoning\n</think>\n\nANSWER: D")
    assert c.answer == "ANSWER: D" and c.reasoning == "some reasoning"


def test_qwen3_non_thinking_completion_is_all_answer():
    c = split("qwen3", NON_THINKING_PROMPT, "The answer is (B).\nANSWER: B", finish="length")
    assert c.answer == "The answer is (B).\nANSWER: B" and c.reasoning is None
    assert c.truncated and not c.ended_in_reasoning


def test_qwen3_template_kwargs():
    class S:
        enable_thinking = True
    assert get_chat_format("qwen3").template_kwargs(S()) == {"enable_thinking": True}


HARMONY = ("<|channel|>analysis<|message|>Think about B. ANSWER: B<|end|><|start|>assistant"
           "<|channel|>final<|message|>ANSWER: C<|return|>")


def test_gpt_oss_final_channel_is_the_answer():
    c = split("gpt_oss", "", HARMONY)
    assert c.answer == "ANSWER: C" and c.reasoning == "Think about B. ANSWER: B"


def test_gpt_oss_without_final_channel_has_no_answer():
    c = split("gpt_oss", "", "<|channel|>analysis<|message|>Still thinking about ANSWER: B", finish="length")
    assert c.answer == "" and c.ended_in_reasoning and c.truncated


def test_gpt_oss_plain_text_is_taken_as_the_answer():
    assert split("gpt_oss", "", "ANSWER: A").answer == "ANSWER: A"


def test_reasoning_split_by_the_server_is_kept():
    from lowbit.chat import split_completion

    chat = get_chat_format("qwen3")
    c = split_completion(chat, THINKING_PROMPT, Generation("ANSWER: B", "stop", 10, 5, reasoning="Because."))
    assert (c.answer, c.reasoning, c.ended_in_reasoning) == ("ANSWER: B", "Because.", False)
    c = split_completion(chat, THINKING_PROMPT, Generation("", "length", 10, 5, reasoning="Still going"))
    assert c.answer == "" and c.ended_in_reasoning and c.truncated
