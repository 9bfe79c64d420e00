"""OpenAI-compatible backend: a model served elsewhere (`vllm serve`, SGLang, TGI, any /v1/chat/completions).

- Prompts: the server applies the chat template, so `render` returns the chat request itself as canonical JSON,
  `{"chat_template_kwargs": {...}, "messages": [...]}` (sorted keys, compact). That string is the prompt recorded
  in predictions.jsonl; `generate` parses it back into the request.
- One request per completion: `num_return_sequences=n` means n requests with n=1, each seeded from the run seed,
  the prompt and the completion index. The server's own `n` is not used: OpenAI's `usage` sums the tokens of all
  choices, so only n=1 gives exact per-completion token counts, which are always the server's `usage`.
- Budget: `max_completion_tokens = max_sequence_length - prompt tokens`, counted (option `tokenizer`) with the
  model's tokenizer from local files, or by the server's `/tokenize` (vLLM, at the root beside /v1), or not at
  all: then no limit is sent and the budget is the server's (max_model_len minus the prompt), as describe()
  says. A prompt with no room left gets empty "length" completions and no request, as on the other backends.
- Sampling: temperature (0 when greedy), top_p, presence_penalty and seed on every request; with
  `sampling_extensions` also top_k (-1 = off), min_p=0 and repetition_penalty=1 (vLLM/SGLang extensions), so the
  defaults a server reads from the checkpoint's generation_config.json never apply. The chat format's template
  kwargs (Qwen3 `enable_thinking`, GPT-OSS `reasoning_effort`) go as `chat_template_kwargs`,
  `sampling.reasoning_effort` as `reasoning_effort`; formats that read special tokens get
  `skip_special_tokens: false`. `extra_body` is merged into every request last.
- Results: finish_reason "length" stays "length", any other end ("stop", "eos_token", ...) is "stop". Reasoning
  that the server split out (vLLM `--reasoning-parser`: `reasoning`, formerly `reasoning_content`) goes to
  `Generation.reasoning`, and the content is the answer.
- Requests run concurrently (at most `max_concurrency`) on an asyncio loop that `generate` drives; finished
  prompts are yielded about once a second, so run.py appends them as they complete. 408, 429, 5xx, connection
  errors and timeouts are retried with exponential backoff and jitter (Retry-After honoured up to the backoff
  maximum); other 4xx are not. A request that still fails aborts the run with a one-line UsageError naming the
  endpoint and the last status, after the prompts already finished are yielded (on disk: a rerun resumes).
- The API key comes from the environment variable named by `api_key_env` (sent as a bearer token); only the
  variable's name reaches the run files.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import time
from collections.abc import Iterator
from typing import Any

import httpx

from lowbit.errors import UsageError
from lowbit.predictors.base import Predictor, progress_bar
from lowbit.predictors.options import predictor_options
from lowbit.records import Generation
from lowbit.sampling import Sampling

log = logging.getLogger(__name__)
logging.getLogger("httpx").setLevel(logging.WARNING)  # it logs every request at INFO

TOKENIZER_CHOICES = ("auto", "local", "server", "none")
RETRIED_STATUSES = frozenset({408, 429})  # plus every 5xx
FLUSH_SECONDS = 1.0  # finished prompts are handed to the caller at least this often
PROBE_MESSAGES = [{"role": "user", "content": "Hello"}]


class RetriableFailure(Exception):
    """A request that failed in a way worth trying again (server busy or down, timeout, aborted generation)."""


class OpenAIPredictor(Predictor):
    name = "openai"

    def __init__(self, model_name: str, **options: Any):
        """`options`: predictor_conf keys (lowbit.predictors.options.OpenAIOptions); the rest from
        conf/predictor/openai.yaml."""
        super().__init__()
        o = predictor_options("openai", options)
        backoff = dict(o.backoff)
        _check_options(o.base_url, o.max_concurrency, o.timeout_s, o.max_retries, backoff, o.extra_body, o.tokenizer)
        self.base_url = o.base_url.rstrip("/")
        self.server_root = self.base_url.removesuffix("/v1")
        self.model = o.model or model_name
        self.api_key_env = o.api_key_env
        self.max_concurrency = o.max_concurrency
        self.timeout_s = o.timeout_s
        self.max_retries = o.max_retries
        self.backoff_initial_s, self.backoff_max_s = float(backoff["initial_s"]), float(backoff["max_s"])
        self.extra_body = dict(o.extra_body or {})
        self.sampling_extensions = o.sampling_extensions
        self.show_progress = o.show_progress
        self.stats.extra.update(retries=0, prompt_count_mismatches=0)
        api_key = os.environ.get(o.api_key_env) if o.api_key_env else None
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.server_version, self.max_model_len = self._check_server()
        self.tokenizer_mode, self._tokenizer = self._choose_tokenizer(o.tokenizer, model_name)

    # -- setup ------------------------------------------------------------------------------------------

    def _check_server(self) -> tuple[str | None, int | None]:
        """Fail now, before a run directory exists, when the server is unreachable or does not serve the model."""
        with self._sync_client() as client:
            try:
                response = client.get(f"{self.base_url}/models")
            except httpx.TransportError as e:
                raise UsageError(f"cannot reach {self.base_url} ({_transport_error(e)}): start the server, or fix "
                                 "predictor_conf.base_url") from e
            if response.status_code in (401, 403):
                raise UsageError(f"{self.base_url}/models: {_http_status(response)} (put the key in "
                                 f"${self.api_key_env}, or set predictor_conf.api_key_env)")
            try:
                served = [m for m in response.json()["data"] if isinstance(m, dict)] if response.is_success else []
            except (ValueError, KeyError, TypeError):  # no model listing: nothing to check
                served = []
            ids = [m.get("id") for m in served]
            if ids and self.model not in ids:
                raise UsageError(f"{self.base_url} does not serve '{self.model}': it serves {', '.join(map(str, ids))} "
                                 "(set predictor_conf.model to the served name)")
            max_model_len = next((m.get("max_model_len") for m in served if m.get("id") == self.model), None)
            try:
                version = client.get(f"{self.server_root}/version").json().get("version")
            except (httpx.HTTPError, ValueError, AttributeError):
                version = None
        return version, max_model_len

    def _sync_client(self) -> httpx.Client:
        return httpx.Client(headers=self._headers, timeout=min(self.timeout_s, 30.0))

    def _choose_tokenizer(self, choice: str, model_name: str) -> tuple[str, Any]:
        if choice in ("auto", "local"):
            tokenizer = _load_local_tokenizer(model_name)
            if tokenizer is not None:
                return "local", tokenizer
            if choice == "local":
                raise UsageError(f"predictor_conf.tokenizer=local: no tokenizer with a chat template for "
                                 f"'{model_name}' in local files (use tokenizer=server or none)")
        if choice in ("auto", "server"):
            if self._server_tokenize_works():
                return "server", None
            if choice == "server":
                raise UsageError(f"predictor_conf.tokenizer=server: {self.server_root}/tokenize does not count "
                                 "chat prompts (use tokenizer=local or none)")
        return "none", None

    def _server_tokenize_works(self) -> bool:
        body = {"model": self.model, "messages": PROBE_MESSAGES, "add_generation_prompt": True}
        try:
            with self._sync_client() as client:
                response = client.post(f"{self.server_root}/tokenize", json=body)
            return response.status_code == 200 and isinstance(response.json().get("count"), int)
        except (httpx.HTTPError, ValueError, AttributeError):
            return False

    def describe(self) -> dict[str, Any]:
        counted_by = {"local": "the local tokenizer", "server": "the server's /tokenize"}.get(self.tokenizer_mode)
        budget = (f"max_sequence_length - prompt tokens (counted by {counted_by})" if counted_by else "the "
                  "server's (max_model_len - prompt tokens): prompt lengths unknown, max_sequence_length not enforced")
        return {
            "name": self.name, "base_url": self.base_url, "model": self.model, "server_version": self.server_version,
            "max_model_len": self.max_model_len, "tokenizer": self.tokenizer_mode, "completion_budget": budget,
            "max_concurrency": self.max_concurrency, "timeout_s": self.timeout_s, "max_retries": self.max_retries,
            "backoff_s": [self.backoff_initial_s, self.backoff_max_s], "sampling_extensions": self.sampling_extensions,
            "extra_body": self.extra_body, "httpx": httpx.__version__,
        }

    # -- prompts ----------------------------------------------------------------------------------------

    def render(self, messages: list[dict[str, str]], template_kwargs: dict[str, Any]) -> str:
        return json.dumps({"messages": messages, "chat_template_kwargs": template_kwargs}, sort_keys=True,
                          ensure_ascii=False, separators=(",", ":"))

    def _local_prompt_tokens(self, request: dict[str, Any]) -> int:
        return self.count_tokens(self._tokenizer.apply_chat_template(
            request["messages"], tokenize=False, add_generation_prompt=True, **request["chat_template_kwargs"]))

    def count_tokens(self, text: str) -> int | None:
        """Tokens of `text` in the local tokenizer; None without one (then reasoning lengths are not recorded)."""
        return None if self._tokenizer is None else len(self._tokenizer.encode(text, add_special_tokens=False))

    # -- generation -------------------------------------------------------------------------------------

    def check_sampling(self, sampling: Sampling) -> None:
        """Refuse sampling this server cannot honour (generate calls it first; callers may call it earlier)."""
        if sampling.top_k > 0 and sampling.is_random and not self.sampling_extensions:
            raise UsageError(f"sampling.top_k={sampling.top_k} needs predictor_conf.sampling_extensions=true "
                             "(top_k is not part of the OpenAI schema), or sampling.top_k=-1")
        if self.max_model_len and sampling.max_sequence_length > self.max_model_len:
            raise UsageError(f"sampling.max_sequence_length={sampling.max_sequence_length} exceeds the server's "
                             f"max_model_len {self.max_model_len}: restart the server with --max-model-len "
                             f">= {sampling.max_sequence_length}, or lower sampling.max_sequence_length")

    def generate(
        self, prompts: list[str], sampling: Sampling, *, seed: int, keep_special_tokens: bool = False
    ) -> Iterator[list[tuple[int, list[Generation]]]]:
        self.check_sampling(sampling)
        requests = [_parse_prompt(p) for p in prompts]
        counts = [self._local_prompt_tokens(r) if self.tokenizer_mode == "local" else None for r in requests]
        loop = asyncio.new_event_loop()
        limits = httpx.Limits(max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency)
        self._client = httpx.AsyncClient(headers=self._headers, timeout=self.timeout_s, limits=limits)
        self._slots = asyncio.Semaphore(self.max_concurrency)
        tasks = [loop.create_task(self._predict(i, prompts[i], requests[i], counts[i], sampling, seed,
                                                keep_special_tokens)) for i in range(len(prompts))]
        progress = progress_bar(len(prompts), self.show_progress)
        try:
            pending: set[asyncio.Task] = set(tasks)
            while pending:
                began = time.perf_counter()
                done, pending = loop.run_until_complete(
                    asyncio.wait(pending, timeout=FLUSH_SECONDS, return_when=asyncio.FIRST_EXCEPTION))
                self.stats.seconds += time.perf_counter() - began
                finished = sorted(t.result() for t in done if t.exception() is None)
                failures = [t.exception() for t in done if t.exception() is not None]
                if finished:
                    self._count(finished)
                    progress.update(len(finished))
                    progress.set_postfix(tok_s=f"{self.stats.completion_tokens / max(self.stats.seconds, 1e-9):.1f}")
                    yield finished
                if failures:
                    raise failures[0]
        finally:
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(self._client.aclose())
            loop.close()
            progress.close()

    def _count(self, finished: list[tuple[int, list[Generation]]]) -> None:
        for _, generations in finished:
            self.stats.prompts += 1
            self.stats.prompt_tokens += generations[0].prompt_tokens
            self.stats.completion_tokens += sum(g.completion_tokens for g in generations)

    async def _predict(self, index: int, prompt: str, request: dict[str, Any], prompt_tokens: int | None,
                       sampling: Sampling, seed: int, keep_special_tokens: bool) -> tuple[int, list[Generation]]:
        """All completions of one prompt."""
        n = sampling.num_return_sequences
        if self.tokenizer_mode == "server":
            body = {"model": self.model, "messages": request["messages"], "add_generation_prompt": True,
                    "chat_template_kwargs": request["chat_template_kwargs"]}
            prompt_tokens = (await self._post(f"{self.server_root}/tokenize", body))["count"]
        budget = None if prompt_tokens is None else sampling.max_sequence_length - prompt_tokens
        if budget is not None and budget <= 0:
            self.stats.prompts_over_limit += 1
            return index, [Generation("", "length", prompt_tokens, 0) for _ in range(n)]
        bodies = [self._chat_body(request, sampling, budget, _completion_seed(seed, prompt, k), keep_special_tokens)
                  for k in range(n)]
        url = f"{self.base_url}/chat/completions"
        generations = await asyncio.gather(*(self._post(url, body, _generation_from) for body in bodies))
        if prompt_tokens is not None and generations[0].prompt_tokens != prompt_tokens:
            if not self.stats.extra["prompt_count_mismatches"]:
                log.warning("the server counted %d prompt tokens where lowbit counted %d: its chat template or "
                            "tokenizer differs from the local one", generations[0].prompt_tokens, prompt_tokens)
            self.stats.extra["prompt_count_mismatches"] += 1
        return index, list(generations)

    def _chat_body(self, request: dict[str, Any], sampling: Sampling, budget: int | None, seed: int,
                   keep_special_tokens: bool) -> dict[str, Any]:
        random_sampling = sampling.is_random
        body: dict[str, Any] = {
            "model": self.model,
            "messages": request["messages"],
            "n": 1,
            "seed": seed,
            "temperature": sampling.temperature if random_sampling else 0.0,
            "top_p": sampling.top_p if random_sampling else 1.0,
            "presence_penalty": sampling.presence_penalty,
        }
        if budget is not None:
            body["max_completion_tokens"] = budget
        if self.sampling_extensions:
            top_k = sampling.top_k if random_sampling and sampling.top_k > 0 else -1
            body.update(top_k=top_k, min_p=0.0, repetition_penalty=1.0)
        if request["chat_template_kwargs"]:
            body["chat_template_kwargs"] = request["chat_template_kwargs"]
        if sampling.reasoning_effort:
            body["reasoning_effort"] = sampling.reasoning_effort
        if keep_special_tokens:
            body["skip_special_tokens"] = False
        return {**body, **self.extra_body}

    async def _post(self, url: str, body: dict[str, Any], parse=None) -> Any:
        """POST with retries; returns parse(response json) (the json itself without parse)."""
        last_failure, retry_after = "", 0.0
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.stats.extra["retries"] += 1
                await asyncio.sleep(self._backoff_seconds(attempt, retry_after))
            try:
                async with self._slots:
                    response = await asyncio.wait_for(self._client.post(url, json=body), self.timeout_s)
                retry_after = _retry_after_seconds(response)
                if response.status_code != 200:
                    if response.status_code in RETRIED_STATUSES or response.status_code >= 500:
                        raise RetriableFailure(_http_status(response))
                    hint = f" (check ${self.api_key_env})" if response.status_code in (401, 403) else ""
                    raise UsageError(f"{url}: {_http_status(response)}{hint}")
                try:
                    data = response.json()
                except ValueError:
                    raise RetriableFailure(f"HTTP 200 with a body that is not JSON: {response.text[:100]!r}") from None
                return parse(data) if parse else data
            except RetriableFailure as e:
                last_failure = str(e)
            except asyncio.TimeoutError:
                last_failure, retry_after = f"no response within timeout_s={self.timeout_s:g}", 0.0
            except httpx.TransportError as e:
                last_failure, retry_after = _transport_error(e), 0.0
        raise UsageError(f"{url} failed {self.max_retries + 1} time(s), last: {last_failure}; finished predictions "
                         "are saved, rerun the same command to resume")

    def _backoff_seconds(self, attempt: int, retry_after: float) -> float:
        """Exponential backoff with jitter: between half and all of initial * 2^(attempt-1), capped at max."""
        ceiling = min(self.backoff_max_s, self.backoff_initial_s * 2 ** (attempt - 1))
        return max(random.uniform(ceiling / 2, ceiling), min(retry_after, self.backoff_max_s))


def _check_options(base_url: str, max_concurrency: int, timeout_s: float, max_retries: int,
                   backoff: dict[str, float], extra_body: Any, tokenizer: str) -> None:
    checks = [
        (str(base_url).startswith(("http://", "https://")), f"base_url must be an http(s) URL such as "
                                                              f"http://127.0.0.1:8000/v1, got '{base_url}'"),
        (max_concurrency >= 1, f"max_concurrency must be >= 1, got {max_concurrency}"),
        (timeout_s > 0, f"timeout_s must be > 0, got {timeout_s}"),
        (max_retries >= 0, f"max_retries must be >= 0, got {max_retries}"),
        (set(backoff) == {"initial_s", "max_s"} and 0 < backoff["initial_s"] <= backoff["max_s"],
         f"backoff must be {{initial_s, max_s}} with 0 < initial_s <= max_s, got {backoff}"),
        (extra_body is None or isinstance(extra_body, dict), f"extra_body must be a mapping, got {extra_body!r}"),
        (tokenizer in TOKENIZER_CHOICES, f"tokenizer must be one of {', '.join(TOKENIZER_CHOICES)}, got '{tokenizer}'"),
    ]
    problems = [message for ok, message in checks if not ok]
    if problems:
        raise UsageError("predictor_conf: " + "; ".join(problems))


def _load_local_tokenizer(model_name: str) -> Any:
    """The model's tokenizer from a local directory or the hub cache (never downloaded), if it has a chat template."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_name, local_files_only=True)
    except Exception:  # not cached, not a tokenizer directory, malformed id: fall back to the server's count
        return None
    return tokenizer if tokenizer.chat_template else None


def _parse_prompt(prompt: str) -> dict[str, Any]:
    try:
        request = json.loads(prompt)
        return {"messages": request["messages"], "chat_template_kwargs": request.get("chat_template_kwargs") or {}}
    except (ValueError, KeyError, TypeError) as e:
        raise UsageError("predictor=openai takes prompts rendered by its own render() (a JSON chat request)") from e


def _completion_seed(run_seed: int, prompt: str, index: int) -> int:
    digest = hashlib.sha256(f"{run_seed}\0{index}\0{prompt}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & (2**31 - 1)


def _generation_from(data: dict[str, Any]) -> Generation:
    try:
        choice, usage = data["choices"][0], data["usage"]
        prompt_tokens, completion_tokens = int(usage["prompt_tokens"]), int(usage["completion_tokens"])
    except (KeyError, IndexError, TypeError, ValueError) as e:
        raise UsageError(f"the server's reply has no choice or no usage token counts: {str(data)[:200]}") from e
    reason = choice.get("finish_reason")
    if reason in (None, "abort", "error"):
        raise RetriableFailure(f"generation ended with finish_reason {reason!r}")
    message = choice.get("message") or {}
    reasoning = message["reasoning"] if message.get("reasoning") is not None else message.get("reasoning_content")
    return Generation(message.get("content") or "", "length" if reason == "length" else "stop", prompt_tokens,
                      completion_tokens, reasoning)


def _http_status(response: httpx.Response) -> str:
    """'HTTP 503: <the server's message>' on one line."""
    try:
        error = response.json()
        message = error.get("error", error) if isinstance(error, dict) else error
        message = message.get("message", message) if isinstance(message, dict) else message
    except ValueError:
        message = response.text
    text = " ".join(str(message).split())[:300]
    return f"HTTP {response.status_code}" + (f": {text}" if text else "")


def _transport_error(error: httpx.TransportError) -> str:
    detail = " ".join(str(error).split())[:200]
    return type(error).__name__ + (f": {detail}" if detail else "")


def _retry_after_seconds(response: httpx.Response) -> float:
    try:
        return max(0.0, float(response.headers.get("retry-after", 0)))
    except ValueError:  # an HTTP date: fall back to our own backoff
        return 0.0

