"""The scorer's reads of the harness's report stream are bounded in bytes and in time, whatever arrives."""

from __future__ import annotations

import os
import threading
import time

import pytest

from lowbit.tasks.livecodebench.sandbox import HEADER_BYTES, _Reports


class Pipe:
    """A real pipe; `feed` writes from a thread (as a harness would), and the teardown closes the read end first,
    so a writer blocked on a full pipe ends before its descriptor number can be reused."""

    def __init__(self):
        self.read_end, self.write_end = os.pipe()
        self.writers: list[threading.Thread] = []

    def feed(self, data: bytes, close: bool) -> None:
        def write():
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(self.write_end, view):]
            except OSError:
                return  # the reader is gone
            if close:
                os.close(self.write_end)
                self.write_end = None

        self.writers.append(threading.Thread(target=write, daemon=True))
        self.writers[-1].start()
        if close:
            self.writers[-1].join(5)

    def close(self) -> None:
        os.close(self.read_end)
        for writer in self.writers:
            writer.join(5)
        if self.write_end is not None:
            os.close(self.write_end)


@pytest.fixture
def pipe():
    pipe = Pipe()
    yield pipe
    pipe.close()


def test_header_then_announced_bytes(pipe):
    pipe.feed(b'{"status": "ok", "output_bytes": 5}\n4600\nrest', close=True)
    reports = _Reports(pipe.read_end, time.monotonic() + 5)
    assert reports.header() == {"status": "ok", "output_bytes": 5}
    assert reports.exactly(5) == b"4600\n" and reports.exactly(4) == b"rest" and reports.exactly(1) is None


def test_a_line_that_never_ends_is_cut_at_the_header_limit(pipe):
    pipe.feed(b"x" * (4 * HEADER_BYTES), close=False)
    reports = _Reports(pipe.read_end, time.monotonic() + 5)
    assert reports.header() is None and len(reports.buffer) < HEADER_BYTES + (1 << 16)


def test_silence_ends_at_the_deadline(pipe):
    started = time.monotonic()
    assert _Reports(pipe.read_end, started + 0.3).header() is None
    assert 0.25 < time.monotonic() - started < 2


def test_fewer_bytes_than_announced_end_at_eof(pipe):
    pipe.feed(b'{"output_bytes": 100}\nshort', close=True)
    reports = _Reports(pipe.read_end, time.monotonic() + 5)
    assert reports.header() == {"output_bytes": 100} and reports.exactly(100) is None


@pytest.mark.parametrize("line", [b"not json\n", b"[1, 2]\n", b'"text"\n'])
def test_a_header_that_is_not_a_json_object_is_refused(pipe, line):
    pipe.feed(line, close=True)
    assert _Reports(pipe.read_end, time.monotonic() + 5).header() is None
