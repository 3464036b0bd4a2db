"""What an aggregate carries besides its rules: its version, and what it collected since it was loaded.

Transitions record timeline steps, emit public events (numbered per aggregate,
so each gets a stable message id) and ask for commands; the unit of work pulls
them on commit and writes them to the outbox in the same transaction as the
state. ``version`` is the optimistic-concurrency check the repository makes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from contracts import Command, Event
from emailer.domain.values import TimelineEntry


@dataclass(kw_only=True)
class Aggregate:
    updated_at: datetime | None = None
    version: int = 0
    event_seq: int = 0
    """How many events this aggregate has emitted in its whole life (numbers its events)."""
    dirty: bool = field(default=False, repr=False)
    """Changed since loaded or saved (repositories save only dirty aggregates)."""
    new_timeline: list[TimelineEntry] = field(default_factory=list, repr=False)
    events: list[tuple[int, Event]] = field(default_factory=list, repr=False)
    commands: list[Command] = field(default_factory=list, repr=False)

    def pull_events(self) -> list[tuple[int, Event]]:
        """The events emitted since the last pull, with their per-aggregate sequence numbers."""
        events, self.events = self.events, []
        return events

    def pull_commands(self) -> list[Command]:
        """The commands asked for since the last pull (sent to the endpoint's own input queue)."""
        commands, self.commands = self.commands, []
        return commands

    def _record(self, at: datetime, kind: str, detail: dict[str, Any]) -> None:
        self.dirty = True
        self.updated_at = at
        self.new_timeline.append(TimelineEntry(at=at, kind=kind, detail=detail))

    def _emit(self, event: Event) -> None:
        self.event_seq += 1
        self.events.append((self.event_seq, event))

    def _send(self, command: Command) -> None:
        self.dirty = True
        self.commands.append(command)
