"""The HTML report of `lowbit compare`: its content, and how a real browser renders it.

The browser is headless Chromium (Debian package `chromium`), driven over the Chrome DevTools protocol on
`--remote-debugging-pipe` (commands on fd 3, replies and events on fd 4, each message JSON ending in a NUL
byte) by the small client below. The tests skip when Chromium is not installed.
"""

from __future__ import annotations

import base64
import fcntl
import io
import json
import os
import re
import select
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from report_support import planted, write_run
from support import run_lowbit

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--remote-debugging-pipe")
INT4_CHECKPOINT = {"quant_method": "compressed-tensors", "format": "pack-quantized",
                   "config_groups": {"group_0": {"targets": ["Linear"], "weights": {
                       "num_bits": 4, "type": "int", "strategy": "group", "group_size": 128, "symmetric": True}}}}


# ------------------------------------------------------------------------------------------- the browser


class DevToolsBrowser:
    """Headless Chromium with one page, driven through the DevTools protocol over a pipe."""

    def __init__(self, executable: str, profile: Path, timeout: float = 30.0):
        self.timeout, self.events, self._next_id, self._buffer = timeout, [], 0, b""
        commands_read, self._commands = _high_pipe()
        self._replies, replies_write = _high_pipe()

        def child_pipes() -> None:  # in the child, before exec: the protocol's fixed descriptors
            os.dup2(commands_read, 3)  # from descriptors above 4, so each dup2 makes a new, inheritable one
            os.dup2(replies_write, 4)

        self._stderr = open(profile.with_suffix(".log"), "wb")
        self.process = subprocess.Popen([executable, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr,
                                        preexec_fn=child_pipes, close_fds=False)
        os.close(commands_read)
        os.close(replies_write)
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.page(f"{domain}.enable")

    def call(self, method: str, session: str | None = None, **params) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive()
            if reply.get("id") == message["id"]:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def page(self, method: str, **params) -> dict:
        return self.call(method, self.session, **params)

    def open(self, url: str) -> None:
        self.events.clear()
        self.page("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")

    def wait_for(self, event: str) -> dict:
        for seen in self.events:
            if seen.get("method") == event:
                return seen
        while True:
            message = self._receive()
            self.events.append(message)
            if message.get("method") == event:
                return message

    def evaluate(self, expression: str):
        result = self.page("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def errors(self) -> list[str]:
        """Uncaught exceptions, console.error/assert calls and browser log errors since the page was opened."""
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(params["exceptionDetails"].get("exception", {}).get("description", "exception"))
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append(" ".join(str(a.get("value", a.get("description"))) for a in params.get("args", [])))
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                found.append(params["entry"].get("text", ""))
        return found

    def requested_urls(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]

    def _receive(self) -> dict:
        deadline = time.monotonic() + self.timeout
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._replies], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError(f"no reply from Chromium within {self.timeout} s")
            chunk = os.read(self._replies, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._commands)
        os.close(self._replies)
        self._stderr.close()


def _high_pipe() -> tuple[int, int]:
    """os.pipe() moved to descriptors >= 10 (close-on-exec), clear of the 3 and 4 the child needs."""
    ends = []
    for end in os.pipe():
        ends.append(fcntl.fcntl(end, fcntl.F_DUPFD_CLOEXEC, 10))
        os.close(end)
    return ends[0], ends[1]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    executable = next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)
    if executable is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install -y chromium)")
    chromium = DevToolsBrowser(executable, tmp_path_factory.mktemp("chromium") / "profile")
    chromium.page("Emulation.setDeviceMetricsOverride", width=1280, height=900, deviceScaleFactor=1, mobile=False)
    yield chromium
    chromium.close()


# ------------------------------------------------------------------------------------------- the report


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """comparison.html of MMLU-Redux runs (a planted drop, noise, an int4 checkpoint with quantization metadata,
    a precision of unknown bits) and AIME 2025 avg@2 runs, written by the real command line."""
    root = tmp_path_factory.mktemp("html_runs")
    rng = np.random.default_rng(1)
    baseline, dropped = planted(280, right_to_wrong=40, wrong_to_right=10, n=400)
    _, noisy = planted(280, right_to_wrong=8, wrong_to_right=8, n=400)
    # no flip in 400 pairs: Tango's interval is +-0.95 points, within a 1-point margin (two flips would not be)
    _, close = planted(280, right_to_wrong=0, wrong_to_right=0, n=400)
    lengths = {name: rng.gamma(4.0, scale, size=400).astype(int) for name, scale in
               (("bf16", 100), ("nvfp4", 140), ("fp8", 100), ("int4", 110))}
    write_run(root / "mmlu_bf16", "bf16", baseline, reasoning_tokens=lengths["bf16"])
    write_run(root / "mmlu_nvfp4", "nvfp4", dropped, reasoning_tokens=lengths["nvfp4"], truncated_share=0.1)
    write_run(root / "mmlu_fp8", "fp8", close, reasoning_tokens=lengths["fp8"])
    write_run(root / "mmlu_int4", "int4-gptq", noisy, reasoning_tokens=lengths["int4"], quantization=INT4_CHECKPOINT)
    write_run(root / "mmlu_w3", "w3-experimental", noisy)
    rates = rng.uniform(0.2, 0.9, size=60)
    overrides = ("sampling.num_return_sequences=2",)
    write_run(root / "aime_bf16", "bf16", rng.random((60, 2)) < rates[:, None], overrides=overrides,
              eval_dataset="aime25", reasoning_tokens=rng.gamma(3.0, 1000, size=60).astype(int))
    write_run(root / "aime_nvfp4", "nvfp4", rng.random((60, 2)) < rates[:, None] - 0.1, overrides=overrides,
              eval_dataset="aime25", reasoning_tokens=rng.gamma(3.0, 1200, size=60).astype(int))
    out = root / "report"
    result = run_lowbit("compare", str(root / "*"), "baseline=bf16", f"out={out}", "format=html")
    assert result.returncode == 0, result.stderr
    assert f"wrote {out / 'comparison.html'}" in result.stdout and sorted(os.listdir(out)) == ["comparison.html"]
    return out / "comparison.html"


@pytest.fixture(scope="module")
def wide_report(tmp_path_factory) -> Path:
    """comparison.html of the widest table: divergence columns beside the accuracy ones, long run directories and
    precision labels."""
    from test_divergence_compare import write_divergence_run

    root = tmp_path_factory.mktemp("wide_html_runs")
    baseline, dropped = planted(280, right_to_wrong=40, wrong_to_right=10, n=400)
    _, close = planted(280, right_to_wrong=0, wrong_to_right=0, n=400)
    emulation = {"act_quant": "nvfp4", "weight_quant": "nvfp4", "wrapped_count": 196, "kept_linear": {"lm_head": 1}}
    write_run(root / "qwen3_4B_mmlu_redux_bf16_reference", "bf16", baseline, reasoning_tokens=100)
    write_run(root / "qwen3_4B_mmlu_redux_nvfp4_reference", "nvfp4", dropped, reasoning_tokens=130,
              truncated_share=0.1, tokens_per_second=1500.0)
    write_run(root / "qwen3_4B_mmlu_redux_int4_gptq_reference", "int4-gptq", close, quantization=INT4_CHECKPOINT)
    write_run(root / "qwen3_4B_mmlu_redux_w4a4_nvfp4_emulated", "w4a4-nvfp4-emulated", dropped, emulation=emulation)
    write_divergence_run(root / "qwen3_4B_divergence_nvfp4", "nvfp4", 0.01)
    write_divergence_run(root / "qwen3_4B_divergence_int4_gptq", "int4-gptq", 0.02)
    out = root / "report"
    result = run_lowbit("compare", str(root / "qwen3_4B_*"), f"out={out}", "format=html")
    assert result.returncode == 0, result.stderr
    return out / "comparison.html"


class _Elements(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def test_the_report_is_one_self_contained_file(report):
    from PIL import Image

    text = report.read_text()
    parser = _Elements()
    parser.feed(text)
    images = [attrs for tag, attrs in parser.tags if tag == "img"]
    links = [value for _, attrs in parser.tags for key, value in attrs.items() if key in ("src", "href")]
    assert not [tag for tag, _ in parser.tags if tag in ("script", "link", "iframe", "object")]
    assert all(link.startswith("data:image/png;base64,") for link in links) and "url(" not in text
    # score-vs-bits (2 tasks), heatmap, per-subject (MMLU) and per-part (AIME), reasoning lengths (2 groups)
    assert len(images) == 7
    for image in images:
        png = Image.open(io.BytesIO(base64.b64decode(image["src"].split(",", 1)[1])))
        assert png.format == "PNG" and png.width > 300 and png.height > 150 and image["alt"]
    assert "@media print" in text and "@page" in text


def test_the_report_holds_the_verdicts_notes_and_bits(report):
    text = report.read_text()
    for expected in ("not shown within 1 point of bf16", "within 1 point of bf16 at 95% confidence",
                     "Qwen3-4B - mmlu-redux (prompt=reference) - accuracy",
                     "Qwen3-4B - aime25 (prompt=reference) - accuracy",
                     "per-subject differences", "per-part differences", "reasoning length per precision"):
        assert expected in text, expected
    assert "<td>int4-gptq</td><td class=\"number\">4.125</td><td>quantization_config</td>" in text
    assert "<td>nvfp4</td><td class=\"number\">4.5</td><td>precision label</td>" in text
    assert "<strong>Unknown bits per weight</strong>" in text and "<code>w3-experimental</code>" in text


def test_chromium_renders_the_report_without_errors(report, browser, tmp_path):
    from PIL import Image

    browser.open(report.resolve().as_uri())
    assert browser.errors() == []
    assert all(url.startswith(("file:", "data:")) for url in browser.requested_urls())
    images = browser.evaluate("Array.from(document.images, i => [i.complete, i.naturalWidth, i.naturalHeight])")
    assert len(images) == 7 and all(complete and width > 0 and height > 0 for complete, width, height in images)

    shot = browser.page("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
    screenshot = Image.open(io.BytesIO(base64.b64decode(shot))).convert("L")
    pixels = np.asarray(screenshot)
    assert screenshot.width >= 1280 and screenshot.height > 2000  # the whole page, plots included
    assert len(np.unique(pixels)) > 100 and (pixels < 200).mean() > 0.02  # text, lines and shading, not blank

    browser.page("Emulation.setEmulatedMedia", media="print")
    page_width = browser.evaluate("document.documentElement.clientWidth")
    widths = browser.evaluate("Array.from(document.images, i => i.getBoundingClientRect().width)")
    assert all(0 < width <= page_width for width in widths)
    pdf = base64.b64decode(browser.page("Page.printToPDF", landscape=True, printBackground=True)["data"])
    assert pdf.startswith(b"%PDF") and len(re.findall(rb"/Type\s*/Page(?!s)", pdf)) >= 2
    browser.page("Emulation.setEmulatedMedia", media="")


@pytest.mark.parametrize("which", ["report", pytest.param("wide_report", marks=pytest.mark.slow)])
def test_the_tables_fit_a_1280_pixel_window_without_scrolling(which, browser, request):
    browser.open(request.getfixturevalue(which).resolve().as_uri())
    assert browser.evaluate("document.documentElement.clientWidth") == 1280
    assert browser.evaluate("document.documentElement.scrollWidth") <= 1280
    tables = browser.evaluate("Array.from(document.querySelectorAll('table'), t => [t.getBoundingClientRect().right, "
                              "t.parentElement.scrollWidth, t.parentElement.clientWidth, t.rows[0].cells.length])")
    assert len(tables) >= 2 and max(columns for *_, columns in tables) >= (15 if which == "wide_report" else 12)
    for right, scroll_width, client_width, _ in tables:
        assert right <= 1280 and scroll_width <= client_width  # the wrapper has nothing to scroll
    # no cell's text is cut or spills over its border, and the last column (bits/weight) is on screen whole
    assert browser.evaluate("Array.from(document.querySelectorAll('td, th')).filter("
                            "c => c.scrollWidth > c.clientWidth).length") == 0
    last = browser.evaluate("Array.from(document.querySelectorAll('table')[0].rows, "
                            "r => r.cells[r.cells.length - 1].getBoundingClientRect().right)")
    assert max(last) <= 1280


def test_the_browser_check_sees_broken_pages(browser, tmp_path):
    broken = tmp_path / "broken.html"
    broken.write_text('<!DOCTYPE html><html><body><img src="data:image/png;base64,AAAA" alt="broken">'
                      "<script>console.error('logged'); missingFunction();</script></body></html>")
    browser.open(broken.as_uri())
    errors = browser.errors()
    assert any("logged" in e for e in errors) and any("missingFunction" in e for e in errors)
    assert browser.evaluate("Array.from(document.images, i => i.naturalWidth)") == [0]
