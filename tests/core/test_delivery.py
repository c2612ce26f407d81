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
    got = {id(s): [e.seq for e in evs] for s, evs in out}
    assert got == {id(a1): [1], id(a2): [1], id(b): [2]}
    router.remove(a1)
    router.remove(b)
    assert len(router) == 1
    assert [(s is a2, [e.seq for e in evs]) for s, evs in router.route([ev(4, "a")])] == [
        (True, [4])
    ]


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
