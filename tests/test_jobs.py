"""Images predicted side by side (commands.jobs): the same outputs as one at a time, results in
order, a large image alone, and the shared state of a run (allocator, model choice) safe in threads."""

import threading
import time
from pathlib import Path

import imageio.v3 as iio
import pytest

from attention_unet import allocator
from attention_unet.cli import main
from attention_unet.commands.jobs import Admission, in_order
from attention_unet.errors import InputError
from attention_unet.inference.choice import ModelChoice

from .conftest import synthetic


def test_results_come_in_order_and_nothing_starts_after_an_error() -> None:
    started: list[int] = []

    def work(item: int) -> int:
        started.append(item)
        if item == 2:
            raise ValueError("item 2")
        time.sleep(0.01 * (item % 2))  # odd items finish after the even one behind them
        return item * 10

    results: list[int] = []
    with pytest.raises(ValueError, match="item 2"):
        results.extend(in_order(work, range(8), jobs=2))  # appends each result as it comes
    assert results == [0, 10]
    assert set(started) <= {0, 1, 2, 3}  # at most one item beyond the failed one was in flight


def test_jobs_must_be_a_sensible_count() -> None:
    with pytest.raises(InputError, match="jobs must be a whole number from 1"):
        list(in_order(str, [1], jobs=0))


def test_a_large_image_waits_for_the_small_ones_and_runs_alone() -> None:
    admission = Admission(small=100)
    small_in, small_may_end, log = threading.Event(), threading.Event(), []

    def small() -> None:
        with admission.admit(50):
            small_in.set()
            small_may_end.wait(5)
            log.append("small ends")

    def large() -> None:
        small_in.wait(5)
        with admission.admit(1000):
            log.append(f"large starts beside {admission._running - 1}")

    threads = [threading.Thread(target=small), threading.Thread(target=large)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while admission._waiting == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert admission._waiting == 1 and log == []  # the large image waits while the small one runs
    small_may_end.set()
    for t in threads:
        t.join(5)
    assert log == ["small ends", "large starts beside 0"]


def test_images_side_by_side_write_what_one_at_a_time_writes(tmp_path: Path, tiny_model: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for k in range(5):
        iio.imwrite(src / f"{k}.png", synthetic(k, (60 + 8 * k, 80))[0])
    outputs = {}
    for jobs in (1, 3):
        out = tmp_path / f"out{jobs}"
        assert main(["predict", str(src), "--out", str(out), "--model", str(tiny_model), "--jobs", str(jobs)]) == 0
        outputs[jobs] = {p.name: p.read_bytes() for p in out.iterdir() if p.suffix in (".png", ".tif", ".csv")}
    assert len(outputs[1]) == 5 * 4 + 1 and outputs[1] == outputs[3]  # mask, overlay, labels, nuclei; summary


def test_freed_memory_stays_kept_until_the_last_image_leaves() -> None:
    if not allocator.keep_freed_memory(False):
        pytest.skip("the setting is glibc's")
    entered, may_leave = threading.Event(), threading.Event()

    def other_image() -> None:
        with allocator.kept():
            entered.set()
            may_leave.wait(5)

    thread = threading.Thread(target=other_image)
    thread.start()
    entered.wait(5)
    with allocator.kept():
        assert allocator._state["kept"]
    assert allocator._state["kept"]  # the other image is still inside
    may_leave.set()
    thread.join(5)
    assert not allocator._state["kept"]


def test_a_model_is_loaded_once_when_images_ask_for_it_at_once() -> None:
    loads = []

    def load(name: str) -> object:
        loads.append(name)
        time.sleep(0.05)
        return object()

    choice = ModelChoice(load, {}, "nuclei")  # type: ignore[arg-type]
    threads = [threading.Thread(target=choice.for_default) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert loads == ["nuclei"]
