"""Delivery rules: who may see which event, and what a resuming client is sent.

Pure: the notifier, the desktop bridge and the command-line client share these rules.
A subscription belongs to one principal and remembers the last seq it was given; events
are delivered in seq order, each at most once per subscription. Seqs are the principal's
own (`Event.seq`), so every number here (head, cursor, watermark) is per principal.

A subscription may be narrowed to a set of task ids (`tasks`): it is then sent only the
events of those tasks, always within its principal (an id of another principal's task
matches nothing). A task is forgotten once its terminal event was sent, so the set holds
the tasks still running or queued. `Router.route` groups the subscriptions that get the
very same events, so the notifier encodes and frames each event once per group.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field

from services.core.events import Event


def visible_to(event: Event, principal: str) -> bool:
    """A principal sees the events of its own tasks and nothing else."""
    return event.principal == principal


@dataclass(frozen=True, slots=True)
class ResumePlan:
    """Where to start replaying for a client.

    Attributes:
        after: replay events with seq > after (then live ones).
        reset: the client's seq is ahead of the log (it was reset): it must drop what it
            knew and take the full replay.
        reload: events the client was owed are gone (pruned, or the log recreated): the
            replay is incomplete and the client must reload its tasks from the API. The
            notifier says so with a "reset" message.
    """

    after: int
    reset: bool
    reload: bool = False


def plan_resume(since: int | None, head: int, pruned_through: int = 0) -> ResumePlan:
    """What to replay for a client that last saw `since` when its principal's newest seq
    is `head` and pruning deleted this principal's events up to seq `pruned_through`.

    No `since`: live events only. A `since` beyond the head means the log was recreated,
    so everything is replayed and the client told to reset. A `since` below
    `pruned_through` means some of the principal's events after it were deleted (whole
    finished tasks): what remains is replayed, and the client told to reload. Pruning
    another principal's events never concerns this one: the watermark is per principal.
    A `since` of 0 has seen nothing that could be gone: all that remains is replayed,
    without a reset (on Redis a principal's seqs start above a floor, its watermark).
    """
    if since is None:
        return ResumePlan(after=head, reset=False)
    if since > head:
        return ResumePlan(after=0, reset=True, reload=True)
    return ResumePlan(after=since, reset=False, reload=0 < since < pruned_through)


@dataclass(eq=False)
class Subscription:
    """One connected client's view of the log.

    Attributes:
        principal: whose events it may be sent (and no one else's, whatever `tasks` says).
        cursor: the last seq of its principal it has considered (sent, or filtered out).
        tasks: None for every task of the principal; else only these task ids' events.
            A task is removed once its terminal event was accepted.
    """

    principal: str
    cursor: int = 0
    tasks: set[str] | None = None

    def accept(self, events: Iterable[Event]) -> list[Event]:
        """The events this subscription must be sent now, in order; advances the cursor."""
        out = []
        tasks = self.tasks
        for ev in events:
            if ev.seq > self.cursor and visible_to(ev, self.principal):
                self.cursor = ev.seq
                if tasks is None:
                    out.append(ev)
                elif ev.task_id in tasks:
                    out.append(ev)
                    if ev.terminal:
                        tasks.discard(ev.task_id)
        return out


@dataclass
class Router:
    """Fans events out to the subscriptions of their principal."""

    _by_principal: dict[str, set[Subscription]] = field(default_factory=dict)

    def add(self, sub: Subscription) -> None:
        self._by_principal.setdefault(sub.principal, set()).add(sub)

    def remove(self, sub: Subscription) -> None:
        subs = self._by_principal.get(sub.principal)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._by_principal[sub.principal]

    def __len__(self) -> int:
        return sum(len(s) for s in self._by_principal.values())

    def route(self, events: Iterable[Event]) -> list[tuple[list[Event], list[Subscription]]]:
        """The events to send now, each with the subscriptions that get exactly those.

        Events are in seq order within each list. Subscriptions of every task of a
        principal that are at the same cursor share one group (one list, encoded once);
        a subscription narrowed to some tasks gets a group of its own.
        """
        grouped: dict[str, list[Event]] = {}
        for ev in events:
            if ev.principal in self._by_principal:
                grouped.setdefault(ev.principal, []).append(ev)
        out: list[tuple[list[Event], list[Subscription]]] = []
        for principal, evs in grouped.items():
            seqs: list[int] | None = None
            shared: dict[int, tuple[list[Event], list[Subscription]]] = {}
            last = evs[-1].seq
            for sub in self._by_principal[principal]:
                if sub.tasks is not None:
                    sent = sub.accept(evs)
                    if sent:
                        out.append((sent, [sub]))
                    continue
                if sub.cursor >= last:
                    continue
                if sub.cursor < evs[0].seq:
                    start = 0
                else:  # rare: it already had some of these (a replay that overlapped)
                    if seqs is None:
                        seqs = [ev.seq for ev in evs]
                    start = bisect_right(seqs, sub.cursor)
                sub.cursor = last
                group = shared.get(start)
                if group is None:
                    group = shared[start] = (evs[start:] if start else evs, [])
                group[1].append(sub)
            out.extend(shared.values())
        return out
