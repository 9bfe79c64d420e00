"""The scorer's reads of the harness's report stream are bounded in bytes and in time, whatever arrives."""

from __future__ import annotations

import os
import threading
import time

import pytest

from lowbit.tasks.livecodebench.sandbox import HEADER_BYTES, _Reports


@pytest.fixture
def pipe():
    read_end, write_end = os.pipe()
    yield read_end, write_end
    for fd in (read_end, write_end):
        try:
            os.close(fd)
        except OSError:
            pass  # closed by the test


def feed(fd: int, data: bytes, close: bool) -> threading.Thread:
    def write():
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(fd, view):]
            except OSError:
                return  # the reader is gone
        if close:
            os.close(fd)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


def test_header_then_announced_bytes(pipe):
    read_end, write_end = pipe
    feed(write_end, b'{"status": "ok", "output_bytes": 5}\n4600\nrest', close=True)
    reports = _Reports(read_end, time.monotonic() + 5)
    assert reports.header() == {"status": "ok", "output_bytes": 5}
    assert reports.exactly(5) == b"4600\n" and reports.exactly(4) == b"rest" and reports.exactly(1) is None


def test_a_line_that_never_ends_is_cut_at_the_header_limit(pipe):
    read_end, write_end = pipe
    feed(write_end, b"x" * (4 * HEADER_BYTES), close=False)
    reports = _Reports(read_end, time.monotonic() + 5)
    assert reports.header() is None and len(reports.buffer) < HEADER_BYTES + (1 << 16)


def test_silence_ends_at_the_deadline(pipe):
    read_end, _ = pipe
    started = time.monotonic()
    assert _Reports(read_end, started + 0.3).header() is None
    assert 0.25 < time.monotonic() - started < 2


def test_fewer_bytes_than_announced_end_at_eof(pipe):
    read_end, write_end = pipe
    feed(write_end, b'{"output_bytes": 100}\nshort', close=True)
    reports = _Reports(read_end, time.monotonic() + 5)
    assert reports.header() == {"output_bytes": 100} and reports.exactly(100) is None


@pytest.mark.parametrize("line", [b"not json\n", b"[1, 2]\n", b'"text"\n'])
def test_a_header_that_is_not_a_json_object_is_refused(pipe, line):
    read_end, write_end = pipe
    feed(write_end, line, close=True)
    assert _Reports(read_end, time.monotonic() + 5).header() is None
