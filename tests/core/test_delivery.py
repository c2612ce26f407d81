"""Delivery rules: visibility, resume plans and fan-out, without sockets."""

from services.core.delivery import Router, Subscription, plan_resume, visible_to
from services.core.events import Event, EventType


def ev(seq: int, principal: str = "a", etype: EventType = EventType.PROGRESS) -> Event:
    return Event(seq, f"t{seq}", principal, etype, 0.0, 1, {})


def test_a_principal_sees_only_its_own_events():
    assert visible_to(ev(1, "a"), "a")
    assert not visible_to(ev(1, "a"), "b")


def test_resume_plans():
    assert plan_resume(None, 10).after == 10  # live only
    assert plan_resume(4, 10).after == 4
    assert not plan_resume(4, 10).reset
    assert plan_resume(10, 10).after == 10
    reset = plan_resume(11, 10)  # the log was recreated: replay all, tell the client
    assert (reset.after, reset.reset) == (0, True)


def test_subscription_delivers_in_order_once():
    sub = Subscription("a", cursor=2)
    assert [e.seq for e in sub.accept([ev(1), ev(2), ev(3), ev(4, "b"), ev(5)])] == [3, 5]
    assert sub.cursor == 5
    assert sub.accept([ev(3), ev(5)]) == []  # duplicates after a replay are dropped


def test_router_fans_out_by_principal():
    router = Router()
    a1, a2, b = Subscription("a"), Subscription("a"), Subscription("b")
    for s in (a1, a2, b):
        router.add(s)
    out = router.route([ev(1, "a"), ev(2, "b"), ev(3, "c")])
    got = {id(s): [e.seq for e in evs] for evs, subs in out for s in subs}
    assert got == {id(a1): [1], id(a2): [1], id(b): [2]}
    assert len(out) == 2  # a1 and a2 share one group: its events are encoded once
    router.remove(a1)
    router.remove(b)
    assert len(router) == 1
    assert [([e.seq for e in evs], subs == [a2]) for evs, subs in router.route([ev(4, "a")])] \
        == [([4], True)]  # fmt: skip


def test_a_subscription_to_some_tasks_gets_only_theirs_and_forgets_the_finished():
    sub = Subscription("a", tasks={"t2", "t4"})
    done = Event(4, "t4", "a", EventType.SUCCEEDED, 0.0, 1, {})
    assert [e.seq for e in sub.accept([ev(1), ev(2), ev(3), done, ev(5)])] == [2, 4]
    assert sub.cursor == 5 and sub.tasks == {"t2"}  # t4 finished: forgotten
    other = Subscription("b", tasks={"t6"})  # another principal's task id: nothing of it
    assert other.accept([ev(6, "a")]) == []


def test_the_router_groups_subscriptions_at_the_same_cursor():
    router = Router()
    fresh, behind, narrow = Subscription("a", 0), Subscription("a", 1), Subscription(
        "a", 0, tasks={"t2"})  # fmt: skip
    for s in (fresh, behind, narrow):
        router.add(s)
    out = {tuple(e.seq for e in evs): len(subs) for evs, subs in router.route(
        [ev(1), ev(2), ev(3)])}  # fmt: skip
    assert out == {(1, 2, 3): 1, (2, 3): 1, (2,): 1}
    assert (fresh.cursor, behind.cursor, narrow.cursor) == (3, 3, 3)


def test_resume_plans_after_pruning():
    # The principal's events were pruned up to seq 7 (pruned_through).
    assert plan_resume(3, 10, 7).reload  # owed events may be gone: reload
    assert plan_resume(3, 10, 7).after == 3  # and what is left is still replayed
    assert not plan_resume(7, 10, 7).reload  # saw through the watermark: complete
    assert not plan_resume(9, 10, 7).reload
    assert not plan_resume(None, 10, 7).reload  # live only: nothing owed
    assert not plan_resume(3, 10, 0).reload  # nothing of its own was pruned
    recreated = plan_resume(11, 10, 0)
    assert recreated.reset and recreated.reload and recreated.after == 0
