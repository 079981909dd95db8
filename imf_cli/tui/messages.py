"""Messages between the explore widgets, the app and its thread workers.

Workers never touch widgets: they post one of these, and a handler on the UI thread reacts.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from imf_cli.service import EntityInfo, Fact, QueryResult, RelationChoice


@dataclass
class QueryRequested(Message):
    """The query bar asks for ``(head, relation, ?)``; a ``str`` is text still to be resolved."""

    head: EntityInfo | str
    relation: RelationChoice | str


@dataclass
class ResultsReady(Message):
    """A query worker finished. ``serial`` tells a stale answer from the current one."""

    serial: int
    result: QueryResult


@dataclass
class QueryFailed(Message):
    """A query could not be answered (unknown or ambiguous name, or a service error).

    ``field`` is the query-bar input at fault (``"head"`` or ``"relation"``), or None.
    """

    serial: int
    error: str
    field: str | None = None


@dataclass
class SuggestionsReady(Message):
    """Entity matches for ``text``, as typed in the head input."""

    text: str
    entities: list[EntityInfo]


@dataclass
class DetailReady(Message):
    """The slow part of the detail pane for one row: its explanation, or (without one) its supporting facts."""

    key: tuple[int, int]
    facts: list[Fact] | None
    explanation: object | None = None  # an imf_cli.explain.Explanation


@dataclass
class Notice(Message):
    """The query bar has something to tell the user on the status line (``error`` in red)."""

    text: str
    error: bool = False


class LeaveInput(Message):
    """Escape in an input with no list open: focus leaves the query bar for the results."""


@dataclass
class RunOpened(Message):
    """A run picked in the run picker was loaded (``service``), or failed to load (``error``); ``serial``
    tells it from an earlier pick still loading when the user picked again."""

    name: str
    service: object | None = None
    error: str | None = None
    serial: int = 0


@dataclass
class NewEntitiesChecked(Message):
    """Whether the open run can rank entities added after training: ``reason`` why not, or None.
    ``serial`` tells a check of an ``n`` pressed again since from the newest."""

    serial: int
    reason: str | None = None
