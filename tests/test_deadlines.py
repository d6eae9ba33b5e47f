"""The book of per-item deadlines the threads and cluster backends share."""

import gc
import weakref

from manycore._core import Deadlines


class Key:
    pass


def test_due_in_order_and_the_wait_to_the_next():
    book: Deadlines[str] = Deadlines()
    assert book.arm("b", 2.0)
    assert book.arm("a", 1.0)  # earlier: the watchdog must wake
    assert not book.arm("c", 3.0)
    assert book.due(0.5) == [] and book.wait(0.5) == 0.5
    assert book.due(2.0) == ["a", "b"] and book.wait(2.0) == 1.0
    assert book.due(5.0) == ["c"] and book.wait(5.0) is None
    assert len(book) == 0


def test_rearming_replaces_and_disarming_drops():
    book: Deadlines[str] = Deadlines()
    book.arm("a", 1.0)
    book.arm("a", 4.0)  # the next item of the same run
    book.arm("b", 2.0)
    book.disarm("b")
    assert book.due(3.0) == [] and book.wait(3.0) == 1.0
    assert book.due(4.0) == ["a"] and book.wait(4.0) is None


def test_a_disarmed_key_is_not_kept_alive_and_stale_entries_do_not_pile_up():
    book: Deadlines[Key] = Deadlines()
    key = Key()
    ref = weakref.ref(key)
    for i in range(10_000):
        book.arm(key, 100.0 + i)
    assert len(book._heap) < 200
    book.disarm(key)
    del key
    gc.collect()
    assert ref() is None
