"""Reader ahead, writer behind: order, real overlap, errors, early stops."""

import os
import threading
from collections.abc import Iterator
from contextlib import closing

import pytest
import torch

from geopera.core.pipeline import BackgroundWriter, overlap_pays, prefetched


def test_items_come_in_order_from_another_thread() -> None:
    threads: list[str] = []

    def make() -> Iterator[int]:
        for i in range(20):
            threads.append(threading.current_thread().name)
            yield i

    assert list(prefetched(make(), depth=3)) == list(range(20))
    assert set(threads) == {"geopera-reader"}


def test_the_next_item_is_made_while_the_consumer_works_on_this_one() -> None:
    made_second = threading.Event()

    def make() -> Iterator[int]:
        yield 0
        made_second.set()
        yield 1

    for item in prefetched(make()):
        if item == 0:  # without a reader ahead, this would wait in vain
            assert made_second.wait(timeout=10)


def test_an_error_while_reading_reaches_the_consumer() -> None:
    def make() -> Iterator[int]:
        yield 0
        raise OSError("truncated file")

    items = prefetched(make())
    assert next(items) == 0
    with pytest.raises(OSError, match="truncated file"):
        next(items)


def test_closing_early_stops_the_reader() -> None:
    made: list[int] = []

    def make() -> Iterator[int]:
        for i in range(1000):
            made.append(i)
            yield i

    before = threading.active_count()
    with closing(prefetched(make(), depth=2)) as items:
        assert next(items) == 0
    assert threading.active_count() == before
    assert len(made) <= 5  # bounded: never ran far ahead


def test_writer_runs_calls_in_order_on_its_thread() -> None:
    done: list[tuple[int, str]] = []
    with BackgroundWriter(depth=2) as writer:
        for i in range(10):
            writer.submit(lambda i: done.append((i, threading.current_thread().name)), i)
    assert [i for i, _ in done] == list(range(10))
    assert {name for _, name in done} == {"geopera-writer"}


def test_a_failed_write_is_raised_and_later_writes_do_not_run() -> None:
    done: list[int] = []

    def write(i: int) -> None:
        if i == 1:
            raise OSError("disk full")
        done.append(i)

    def write_all() -> None:
        with BackgroundWriter(depth=1) as writer:
            for i in range(5):
                writer.submit(write, i)

    with pytest.raises(OSError, match="disk full"):
        write_all()
    assert done == [0]


def test_inline_when_disabled() -> None:
    def make() -> Iterator[str]:
        for _ in range(3):
            yield threading.current_thread().name

    main = threading.current_thread().name
    assert list(prefetched(make(), enabled=False)) == [main] * 3
    ran_on: list[str] = []
    with BackgroundWriter(enabled=False) as writer:
        writer.submit(lambda: ran_on.append(threading.current_thread().name))
        assert ran_on == [main]  # at once, in the caller's thread


def test_threads_pay_off_the_cpu_or_with_free_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    assert overlap_pays(torch.device("cuda"))  # the host is free while the device computes
    cores = len(os.sched_getaffinity(0))
    monkeypatch.setattr(torch, "get_num_threads", lambda: cores)
    assert not overlap_pays(torch.device("cpu"))  # every core runs the model
    monkeypatch.setattr(torch, "get_num_threads", lambda: max(cores - 1, 0))
    assert overlap_pays(torch.device("cpu"))
