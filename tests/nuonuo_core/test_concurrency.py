"""Threads and asyncio: no exception, no lost write, no duplicate, no blocked loop."""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from nuonuo_core import AssociativeMemory, HashingEmbedder, MemoryConfig, MemoryNotFoundError

THREADS = 8
OPERATIONS_PER_THREAD = 150
SMALL = MemoryConfig(code_dim=2048, k=16, device="cpu")


def new_memory(path: Path | None) -> AssociativeMemory:
    return AssociativeMemory(path, config=SMALL, embedder=HashingEmbedder(dim=64))


def run_threads(target, count: int = THREADS) -> list[BaseException]:
    """Run ``target(number, barrier)`` in ``count`` threads; returns the exceptions they raised."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def body(number: int) -> None:
        try:
            target(number, barrier)
        except BaseException as error:  # collected and reported by the test
            errors.append(error)

    threads = [threading.Thread(target=body, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(thread.is_alive() for thread in threads), "a thread did not finish"
    return errors


@pytest.mark.parametrize("on_file", [False, True], ids=["ram", "file"])
def test_mixed_operations_from_threads(tmp_path, on_file):
    path = tmp_path / "memory.db" if on_file else None
    memory = new_memory(path)
    # Texts every thread adds too, so deduplication races with itself.
    shared_texts = [f"shared fact number {j} about the lighthouse" for j in range(10)]
    own: list[dict[str, str]] = [{} for _ in range(THREADS)]
    shared_ids: list[dict[str, str]] = [{} for _ in range(THREADS)]

    def worker(number: int, barrier: threading.Barrier) -> None:
        rng = random.Random(number)
        mine = own[number]
        barrier.wait()
        for step in range(OPERATIONS_PER_THREAD):
            choice = rng.random()
            if choice < 0.3 or not mine:
                text = f"thread {number} note {step} mentions {rng.choice(['tea', 'rain', 'bikes'])}"
                if rng.random() < 0.5:
                    mine[memory.add(text, namespace="team", session=f"t{number}")] = text
                else:
                    batch = [text, text + " again"]
                    for memory_id, batch_text in zip(memory.add_many(batch, namespace="team"), batch):
                        mine[memory_id] = batch_text
            elif choice < 0.45:
                text = rng.choice(shared_texts)
                shared_ids[number][text] = memory.add(text, namespace="team")
            elif choice < 0.7:
                results = memory.recall(rng.choice(["tea", "rain", "lighthouse"]), k=5, hops=rng.randint(1, 3), namespace="team")
                assert all(r.namespace == ("team",) for r in results)
            elif choice < 0.85:
                target = rng.choice(sorted(mine))
                text = f"thread {number} rewrote note at step {step}"
                assert memory.update(target, text).id == target
                mine[target] = text
            else:
                target = rng.choice(sorted(mine))
                memory.delete(target)
                del mine[target]

    errors = run_threads(worker)
    assert errors == []

    # Every thread's acknowledged writes, exactly once; each shared text once.
    expected = {memory_id: text for texts in own for memory_id, text in texts.items()}
    for text in shared_texts:
        ids = {ids_by_text[text] for ids_by_text in shared_ids if text in ids_by_text}
        assert len(ids) <= 1, f"{text!r} was stored {len(ids)} times"
        expected.update({memory_id: text for memory_id in ids})

    def stored(m: AssociativeMemory) -> dict[str, str]:
        return {r.id: r.text for r in m.list("team")}

    assert stored(memory) == expected
    assert len(memory) == len(expected)
    if on_file:
        memory.close()
        with new_memory(path) as reopened:
            assert stored(reopened) == expected


@pytest.mark.parametrize("on_file", [False, True], ids=["ram", "file"])
def test_same_text_from_eight_threads(tmp_path, on_file):
    memory = new_memory(tmp_path / "memory.db" if on_file else None)
    returned: list[list[str]] = [[] for _ in range(THREADS)]
    rounds = 20

    def worker(number: int, barrier: threading.Barrier) -> None:
        for round_number in range(rounds):
            barrier.wait()
            returned[number].append(memory.add(f"everyone says the same thing, round {round_number}"))

    assert run_threads(worker) == []

    for round_number in range(rounds):
        assert len({ids[round_number] for ids in returned}) == 1
    assert len(memory) == rounds
    memory.close()


def test_same_text_from_concurrent_tasks():
    memory = new_memory(None)

    async def scenario() -> list[str]:
        return await asyncio.gather(*(memory.aadd("one text, many tasks") for _ in range(THREADS)))

    ids = asyncio.run(scenario())

    assert len(set(ids)) == 1
    assert len(memory) == 1


def test_concurrent_text_and_cue_updates_kept(tmp_path):
    memory = new_memory(tmp_path / "memory.db")
    target = memory.add("the original text")
    last_text = "text version 39"
    last_cues = ["cue version 39"]

    def worker(number: int, barrier: threading.Barrier) -> None:
        barrier.wait()
        for version in range(40):
            if number == 0:
                memory.update(target, f"text version {version}")
            else:
                memory.update(target, cues=[f"cue version {version}"])

    assert run_threads(worker, count=2) == []

    record = memory.get(target)
    assert record.text == last_text
    assert [c for c in record.cues if c.startswith("cue")] == last_cues
    memory.close()
    with new_memory(tmp_path / "memory.db") as reopened:
        assert reopened.get(target).text == last_text
        assert reopened.recall("cue version 39", k=1)[0].id == target


class InterferingEmbedder:
    """Hashing embedder that, while the calling thread embeds, has another thread update the text.

    It waits up to ``wait_seconds`` for that update; an update blocked on the
    memory's lock is left running, and the test joins it at the end.
    """

    def __init__(self, wait_seconds: float = 1.0) -> None:
        self.inner = HashingEmbedder(dim=64)
        self.name = self.inner.name
        self.dim = self.inner.dim
        self.wait_seconds = wait_seconds
        self.memory: AssociativeMemory | None = None
        self.target: str | None = None
        self.interferer = threading.current_thread()
        self.started: list[threading.Thread] = []

    def encode(self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        if self.target is not None and threading.current_thread() is self.interferer:
            number = len(self.started)
            thread = threading.Thread(
                target=self.memory.update, args=(self.target, f"text changed {number}")  # type: ignore[union-attr]
            )
            self.started.append(thread)
            thread.start()
            thread.join(timeout=self.wait_seconds)
        return self.inner.encode(texts)


def test_update_not_starved_by_writer(tmp_path):
    embedder = InterferingEmbedder()
    memory = AssociativeMemory(tmp_path / "memory.db", config=SMALL, embedder=embedder)
    target = memory.add("the original text")
    embedder.memory, embedder.target = memory, target

    # During every embedding outside the lock, another thread changes the text.
    memory.update(target, cues=["the cue that must stay"])
    embedder.target = None
    for thread in embedder.started:
        thread.join(timeout=60)

    assert len(embedder.started) == 4
    record = memory.get(target)
    assert record.text == "text changed 3"
    assert "the cue that must stay" in record.cues
    memory.close()


def test_reader_sees_whole_updates():
    memory = new_memory(None)
    target = memory.add("version 0 of the note")
    stop = threading.Event()
    seen: list[str] = []

    def worker(number: int, barrier: threading.Barrier) -> None:
        barrier.wait()
        if number == 0:
            for version in range(1, 200):
                memory.update(target, f"version {version} of the note")
            memory.delete(target)
            stop.set()
            return
        while not stop.is_set():
            try:
                record = memory.get(target)
            except MemoryNotFoundError:
                continue
            seen.append(record.text)
            assert record.cues[0] == record.text

    assert run_threads(worker, count=3) == []
    assert all(text.startswith("version ") for text in seen)


class GatedEmbedder:
    """Hashing embedder whose ``encode`` waits until the test opens the gate.

    It records whether the gate was opened while it waited, which can only
    happen if the event loop kept running during the call.
    """

    def __init__(self) -> None:
        self.inner = HashingEmbedder(dim=64)
        self.name = self.inner.name
        self.dim = self.inner.dim
        self.closed = True
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.opened_while_waiting: list[bool] = []

    def encode(self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        if not self.closed:
            return self.inner.encode(texts)
        self.entered.set()
        self.opened_while_waiting.append(self.gate.wait(timeout=30))
        return self.inner.encode(texts)


async def tick_until_entered(embedder: GatedEmbedder) -> int:
    """Tick on the event loop until the embedder is entered, five ticks more, then open the gate."""
    ticks = 0
    while not embedder.entered.is_set():
        await asyncio.sleep(0.001)
        ticks += 1
    for _ in range(5):
        await asyncio.sleep(0.001)
        ticks += 1
    embedder.gate.set()
    return ticks


@pytest.mark.parametrize("call", ["aadd_many", "arecall"])
def test_async_calls_leave_loop_running(call):
    embedder = GatedEmbedder()
    memory = AssociativeMemory(config=SMALL, embedder=embedder)
    embedder.closed = False
    texts = [f"note {i} about topic {i % 17}" for i in range(2000)]
    memory.add_many(texts[:100])
    embedder.closed = True

    async def scenario():
        if call == "aadd_many":
            work = memory.aadd_many(texts)
        else:
            work = memory.arecall("topic 3", k=5, hops=2)
        return await asyncio.gather(work, tick_until_entered(embedder))

    result, ticks = asyncio.run(scenario())

    assert embedder.opened_while_waiting == [True]
    assert ticks >= 5
    if call == "aadd_many":
        assert len(result) == 2000
        assert len(memory) == 2000
    else:
        assert result[0].text.endswith("about topic 3")
