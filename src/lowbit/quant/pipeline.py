"""Reading, device work and writing of a streamed checkpoint conversion, overlapped in three threads.

    Prefetcher      a reader thread that reads the next units of tensors, at most `depth` ahead of the consumer;
                    on CUDA it stages the tensors a unit marks for the device through pinned memory and copies
                    them to the device on a side stream, so the consumer finds them there
    to_host         the consumer's non-blocking device-to-host copies of finished tensors into pinned memory, and
                    the event that marks them done
    OrderedWriter   a writer thread that adds finished tensors to a ShardWriter in their numbered output order
                    (holding the few that finish early), after their device-to-host copies are done

An error in either thread is raised again, as the same exception, in the consumer's thread at its next step.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Self

import torch

from lowbit.quant.safetensors_io import ShardWriter

DEFAULT_DEPTH = 3
_POLL_SECONDS = 0.05


@dataclass(frozen=True)
class ReadUnit:
    """Tensors read together and handed to the consumer together."""

    names: tuple[str, ...]
    to_device: bool  # whether the consumer wants them on the device (else they stay on the host as read)


class _Done:
    pass


@dataclass
class _Failed:
    error: BaseException


class _PeakBytes:
    """Bytes held between two threads, and the most ever held."""

    def __init__(self):
        self._lock = threading.Lock()
        self.current = 0
        self.peak = 0

    def add(self, nbytes: int) -> None:
        with self._lock:
            self.current += nbytes
            self.peak = max(self.peak, self.current)


def _put_unless(q: queue.Queue, item, stop: Callable[[], bool]) -> bool:
    """Put `item` on the bounded queue, waiting for room; False (not put) once `stop()` is true."""
    while not stop():
        try:
            q.put(item, timeout=_POLL_SECONDS)
            return True
        except queue.Full:
            continue
    return False


class _QueueThread:
    """A daemon thread running `_run` and the bounded queue it shares with the consumer's thread; as a context
    manager it starts the thread and, on exit, stops and joins it. `_held` counts the bytes held in between."""

    def __init__(self, name: str, depth: int):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._held = _PeakBytes()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        raise NotImplementedError


class Prefetcher(_QueueThread):
    """Iterates (unit, {name: tensor}) over `units` in order while a reader thread reads up to `depth` units ahead.

    `peak_prefetched_bytes` is the most bytes of read units the consumer had not yet taken (at most `depth` + 1
    units: those queued and the one waiting for room)."""

    def __init__(self, read: Callable[[str], torch.Tensor], units: Iterable[ReadUnit], device: torch.device,
                 depth: int = DEFAULT_DEPTH):
        super().__init__("checkpoint-reader", depth)
        self._read, self._units, self._device = read, units, device

    @property
    def peak_prefetched_bytes(self) -> int:
        return self._held.peak

    def __iter__(self) -> Iterator[tuple[ReadUnit, dict[str, torch.Tensor]]]:
        while True:
            item = self._queue.get()
            if isinstance(item, _Done):
                return
            if isinstance(item, _Failed):
                raise item.error
            unit, tensors, nbytes = item
            self._held.add(-nbytes)
            if self._device.type == "cuda":
                consumer = torch.cuda.current_stream(self._device)
                for tensor in tensors.values():
                    if tensor.is_cuda:  # allocated on the side stream: freed only once the consumer's work is done
                        tensor.record_stream(consumer)
            yield unit, tensors

    def _run(self) -> None:
        try:
            side_stream = torch.cuda.Stream(self._device) if self._device.type == "cuda" else None
            for unit in self._units:
                if self._stop.is_set():
                    return
                tensors = {name: self._read(name) for name in unit.names}
                nbytes = sum(t.nbytes for t in tensors.values())
                if unit.to_device and side_stream is not None:
                    tensors = self._to_device(tensors, side_stream)
                self._held.add(nbytes)
                if not _put_unless(self._queue, (unit, tensors, nbytes), self._stop.is_set):
                    return
            _put_unless(self._queue, _Done(), self._stop.is_set)
        except BaseException as e:  # handed to the consumer, which raises it
            _put_unless(self._queue, _Failed(e), self._stop.is_set)

    def _to_device(self, tensors: dict[str, torch.Tensor], stream) -> dict[str, torch.Tensor]:
        on_device = {}
        with torch.cuda.stream(stream):
            for name, tensor in tensors.items():
                pinned = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
                pinned.copy_(tensor)
                on_device[name] = pinned.to(self._device, non_blocking=True)
        stream.synchronize()  # this thread waits for the copies; the consumer's stream never does
        return on_device


def to_host(tensors: list[tuple[str, torch.Tensor]]) -> tuple[list[tuple[str, torch.Tensor]], object | None]:
    """Host copies of (name, tensor) pairs, started without waiting, and a CUDA event recorded after them on the
    current stream (None when every tensor is already on the host)."""
    if not any(t.is_cuda for _, t in tensors):
        return tensors, None
    copies = []
    for name, tensor in tensors:
        if tensor.is_cuda:
            host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
            host.copy_(tensor, non_blocking=True)
            tensor = host
        copies.append((name, tensor))
    done = torch.cuda.Event()
    done.record()
    return copies, done


class OrderedWriter(_QueueThread):
    """Adds numbered output chunks to `writer` in number order (0, 1, 2, ...) on a writer thread.

    `put(number, tensors, done)` hands over chunk `number` (a list of (name, host tensor), written in that order,
    once the event `done` has completed); chunks may arrive early and wait for the ones before them.
    `peak_unwritten_bytes` is the most bytes handed over but not yet added to the ShardWriter."""

    def __init__(self, writer: ShardWriter, depth: int = DEFAULT_DEPTH):
        super().__init__("checkpoint-writer", depth)
        self._writer = writer
        self._error: BaseException | None = None
        self._next = 0

    @property
    def peak_unwritten_bytes(self) -> int:
        return self._held.peak

    def put(self, number: int, tensors: list[tuple[str, torch.Tensor]], done=None) -> None:
        self._raise_if_failed()
        nbytes = sum(t.nbytes for _, t in tensors)
        self._held.add(nbytes)
        if not _put_unless(self._queue, (number, tensors, done, nbytes), lambda: self._error is not None):
            self._raise_if_failed()

    def finish(self, chunks: int) -> list[str]:
        """Wait until all `chunks` chunks are added, then write the last shard and the index (ShardWriter.finish)."""
        self._raise_if_failed()
        _put_unless(self._queue, _Done(), lambda: self._error is not None)
        self._thread.join()
        self._raise_if_failed()
        if self._next != chunks:
            raise RuntimeError(f"{chunks} output chunks were expected but {self._next} were written")
        return self._writer.finish()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        early: dict[int, tuple] = {}
        try:
            while not self._stop.is_set():
                try:
                    item = self._queue.get(timeout=_POLL_SECONDS)
                except queue.Empty:
                    continue
                if isinstance(item, _Done):
                    if early:
                        raise RuntimeError(f"output chunks {sorted(early)} arrived but chunk {self._next} never did")
                    return
                number, tensors, done, nbytes = item
                early[number] = (tensors, done, nbytes)
                while self._next in early:
                    tensors, done, nbytes = early.pop(self._next)
                    if done is not None:
                        done.synchronize()
                    for name, tensor in tensors:
                        self._writer.add(name, tensor)
                    self._held.add(-nbytes)
                    self._next += 1
        except BaseException as e:  # raised again in the consumer's thread at its next put or finish
            self._error = e
