"""The task model's pages and removals, on its own: it asks for the next page of the
current search only when the view scrolls to the end, a page of an old search moves
nothing, and parked rows come back where they were (checked by Qt's model tester)."""

from __future__ import annotations

from desktop.task_model import TaskFilterProxy, TaskModel
from tests.desktop.test_task_model import ids, snapshot


def test_pages_are_asked_for_per_search_and_one_at_a_time(qtbot, qtmodeltester):
    model = TaskModel()
    wanted: list[tuple] = []
    model.page_wanted.connect(lambda *a: wanted.append(a))
    model.load([snapshot(f"t{i}", i, "succeeded") for i in range(5, 10)])
    assert not model.canFetchMore()  # no cursor yet: nothing is known beyond
    model.set_cursor(5)
    assert model.canFetchMore()
    model.fetchMore()
    assert wanted == [("", [], 5)] and not model.canFetchMore()  # one at a time
    model.add_page("", [], [snapshot(f"t{i}", i, "succeeded") for i in range(5)], None)
    assert ids(model) == [f"t{i}" for i in range(9, -1, -1)] and not model.canFetchMore()
    model.set_search("zebra", ["failed"])  # a search: its first page at once
    assert wanted[-1] == ("zebra", ["failed"], None)
    model.add_page("", [], [snapshot("late", 20)], 3)  # an old search's page: merged only
    assert model.row_of("late") is not None and not model.canFetchMore()
    model.add_page("zebra", ["failed"], [snapshot("z1", 1.5, "failed")], 7)
    assert model.search_hit("z1") and model.canFetchMore()
    model.page_failed("zebra", ["failed"], "bad")
    assert model.search_error == "bad" and not model.canFetchMore()
    model.set_search("", [])  # back to the plain history: where it was, no new request
    assert len(wanted) == 2
    qtmodeltester.check(model)


def test_parked_rows_come_back_and_a_search_hit_shows_through_the_filter(qtbot):
    model = TaskModel()
    model.load([snapshot(f"t{i}", i, "succeeded", args={"word": f"w{i}"}) for i in range(4)])
    proxy = TaskFilterProxy()
    proxy.setSourceModel(model)
    assert model.park(["t1", "t2", "nope"]) == ["t1", "t2"]
    assert ids(model) == ["t3", "t0"]
    model.restore(["t2", "t1"])
    assert ids(model) == ["t3", "t2", "t1", "t0"]
    proxy.set_text("nothing-like-it")
    assert proxy.rowCount() == 0
    model.set_search("nothing-like-it")
    model.add_page("nothing-like-it", [], [model.task_by_id("t2")], None)  # the server said so
    assert proxy.rowCount() == 1
    proxy.set_text("w3")  # the local rules: a word of its arguments
    model.set_search("w3")
    assert proxy.rowCount() == 1
