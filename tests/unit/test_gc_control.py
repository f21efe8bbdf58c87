"""serving/gc_control.py: the start-up heap and the survivors of full collections are frozen."""

from __future__ import annotations

import gc
import time

import pytest
from prometheus_client import REGISTRY

from serving.gc_control import GcController, HeapFreezer


@pytest.fixture
def clean_gc():
    gc.unfreeze()
    yield
    gc.unfreeze()  # give this test process its collector back


def _pauses(generation: str) -> float:
    return REGISTRY.get_sample_value("riskops_gc_pause_seconds_count", {"generation": generation}) or 0.0


def _wait(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_start_freezes_the_heap_and_full_collections_freeze_their_survivors(clean_gc):
    assert gc.get_freeze_count() == 0
    ctl = GcController(freeze=True).start()
    try:
        at_start = gc.get_freeze_count()
        assert at_start > 10_000  # the test process's modules, functions, dicts
        long_lived = [[i] for i in range(20_000)]  # new tracked containers that stay alive
        full_before, freezes_before = _pauses("2"), ctl.freezes
        gc.collect()
        assert _wait(lambda: _pauses("2") >= full_before + 1)  # every collection is measured
        assert _wait(lambda: ctl.freezes > freezes_before)
        assert gc.get_freeze_count() >= at_start + len(long_lived)
        # the collector no longer walks them: a full collection sees only what came since
        walked = {id(o) for o in gc.get_objects(generation=2)}
        assert all(gc.is_tracked(x) and id(x) not in walked for x in long_lived)
    finally:
        ctl.close()
    assert ctl._on_gc not in gc.callbacks


def test_heap_freezer_freezes_survivors_only_when_its_owner_asks(clean_gc):
    """The push child's policy: the callback only notes a full collection; freezing waits for
    `freeze_survivors()` (called between pushes), and without a full collection it does nothing."""
    freezer = HeapFreezer()
    try:
        at_start = freezer.start()
        # what start() froze is in the permanent generation; other threads may free a few of those
        # objects meanwhile (the count only drops then), but nothing joins it without a freeze
        assert at_start > 10_000 and 0 <= at_start - gc.get_freeze_count() < 1_000
        assert freezer.freezes == 1
        assert freezer.freeze_survivors() is False  # no full collection since
        long_lived = [[i] for i in range(20_000)]
        gc.collect(1)  # a young collection is not a full one
        assert freezer.freeze_survivors() is False
        gc.collect()
        noted = gc.get_freeze_count()
        assert noted <= at_start  # noted, not frozen yet: the permanent generation did not grow
        assert freezer.freeze_survivors() is True and freezer.freezes == 2
        assert gc.get_freeze_count() >= noted + len(long_lived)
    finally:
        freezer.stop()
    assert freezer._on_gc not in gc.callbacks


def test_measure_only_freezes_nothing(clean_gc):
    ctl = GcController(freeze=False).start()
    try:
        before = _pauses("2")
        gc.collect()
        assert _wait(lambda: _pauses("2") >= before + 1)
        time.sleep(0.3)
        assert gc.get_freeze_count() == 0
    finally:
        ctl.close()


def test_the_collector_callback_takes_no_lock(clean_gc, monkeypatch):
    """A collection can start while its thread holds a metrics lock (prometheus_client's
    multiprocess value lock, in the benchmark's server): recording the pause from inside the
    callback deadlocked that thread. Here the pause histogram takes a lock the collecting
    thread already holds: the collection must still finish."""
    import threading

    from serving import prometheus_metrics

    metric_lock = threading.Lock()

    class LockingHistogram:
        observed: list[float] = []

        def labels(self, *_):
            return self

        def observe(self, value):
            with metric_lock:
                self.observed.append(value)

    monkeypatch.setattr(prometheus_metrics, "GC_PAUSE", LockingHistogram())
    ctl = GcController(freeze=True, interval_s=3600).start()  # publishing only when asked
    try:
        done = threading.Event()

        def collect_inside_the_metric_lock():
            with metric_lock:
                gc.collect()
            done.set()

        worker = threading.Thread(target=collect_inside_the_metric_lock, daemon=True)
        worker.start()
        assert done.wait(10), "the collection blocked inside the gc callback"
        ctl.publish()
        assert LockingHistogram.observed and ctl.freezes == 2
    finally:
        ctl.close()


def test_frozen_objects_are_still_freed_when_dropped(clean_gc):
    """Reference counting frees frozen acyclic objects: here an entity track the LRU evicts."""
    import weakref

    from riskops.pii import hash_record
    from serving.entity_state import EntityTracker
    from serving.examples import example_transaction

    tracker = EntityTracker(capacity=4)  # one transaction's user, merchant, device and IP
    first = hash_record(example_transaction())
    tracker.observe(first, {ek: None for ek in tracker.keys_of(first)})
    tracks = [weakref.ref(t) for t in tracker._tracks.values()]
    gc.freeze()
    second = hash_record(
        example_transaction(user_id="u-2", merchant_id="m-2", device_id="d-2", ip_address="10.9.9.9")
    )
    tracker.observe(second, {ek: None for ek in tracker.keys_of(second)})  # evicts all four
    assert len(tracks) == 4 and all(ref() is None for ref in tracks)


def test_a_dropped_model_leaves_no_cyclic_garbage(tmp_path, clean_gc):
    """A hot swap drops the old model while it is frozen: it must not need the collector to go."""
    from riskops.data.generator import GeneratorConfig, generate
    from riskops.training.finetune import TrainConfig, train_from_training_set
    from serving.predictor import load_model

    df = generate(GeneratorConfig(rows=600, seed=3, fraud_rate=0.05))
    trained = train_from_training_set(
        df, tmp_path / "m", TrainConfig(encoder="tiny", epochs=1, max_steps=2, progress=False, num_threads=1)
    )
    gc.collect()
    lm = load_model(trained.model_dir)
    gc.freeze()
    del lm
    gc.unfreeze()
    assert gc.collect() == 0
