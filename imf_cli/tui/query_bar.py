"""The query bar: a head-entity input with live search, and a relation input with its inverses.

Typing in the head input searches the store's FTS index (name and description) in a thread worker and
lists the matches under the input: name, key and the start of the description. The relation input
lists the relations matching what is typed, each also as ``← relation`` (its inverse, which predicts
heads; typing ``<-`` lists only inverses). Up and Down move through a list, Enter picks the
highlighted entry, Escape closes the list or, with none open, leaves the input.

Enter with both fields filled asks for the query with :class:`~imf_cli.tui.messages.QueryRequested`,
except right after picking a head from the list while a relation is already there: then the status
line says which query Enter will run, and the results of the previous one stay until it does.
"""

from __future__ import annotations

import re

from rich.cells import cell_len
from rich.text import Text
from textual import on, work
from textual.actions import SkipAction
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Input, OptionList
from textual.widgets.option_list import Option
from textual.worker import get_current_worker

from imf_cli.service import EntityInfo, RelationChoice, Service, closest_relations, split_relation_text
from imf_cli.tui.messages import LeaveInput, Notice, QueryRequested, SuggestionsReady
from imf_cli.tui.render import truncate
from kgdata.files import BIDI_CONTROLS, CONTROL_CHARACTERS, LINE_SEPARATORS

#: How many entity matches the head list shows.
SUGGESTIONS = 8

#: The most characters a query input holds: far beyond any entity name or relation, short enough that
#: a pasted document does not become a search.
MAX_QUERY = 256

#: What a query input never holds: terminal escape sequences (a pasted coloured line), control
#: characters (tab, bell, NUL, C1) and line separators (each run becomes one space), and the
#: bidirectional overrides that would reorder what is shown (dropped). The same classes that no data
#: file may hold (:mod:`kgdata.files`).
_ESCAPES = re.compile(rf"\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-_]|[{BIDI_CONTROLS}]")
_UNPRINTABLE = re.compile(f"[\t{CONTROL_CHARACTERS}{LINE_SEPARATORS}]+")


def printable(text: str) -> str:
    """``text`` as a query input keeps it: escape sequences and bidi overrides dropped, each run of control
    characters one space.

    ``"\\x1b[31mGermany\\x07\\tx"`` → ``"Germany x"``.
    """
    return _UNPRINTABLE.sub(" ", _ESCAPES.sub("", text))


class QueryInput(Input):
    """An :class:`~textual.widgets.Input` whose typed or pasted text is :func:`printable` and at most
    :data:`MAX_QUERY` characters; what does not fit is cut, not refused."""

    def replace(self, text: str, start: int, end: int) -> None:
        text = printable(text)
        start, end = sorted((max(0, start), min(len(self.value), end)))
        room = MAX_QUERY - (len(self.value) - (end - start))
        if text and room <= 0:
            self.restricted()
            return
        super().replace(text[: max(room, 0)], start, end)


def match_relations(relations: list[RelationChoice], text: str) -> list[RelationChoice]:
    """Relations whose name or key contains the typed words: prefix matches first, forward before inverse;
    a leading ``<-``, ``←``, ``<`` or ``^`` lists inverses, unless the text as typed begins a relation's key.

    When none does, the relations closest to the text (:func:`~imf_cli.service.closest_relations`), so
    that a typo still lists its relation.
    """
    needle, inverse = split_relation_text(text)
    needle = needle.lower()
    # Keys may themselves start with an inverse mark (``<http://…>`` URIs): text that begins a forward
    # relation's key or name as typed, mark included, lists that relation first, the exact key before
    # all (as :meth:`~imf_cli.service.PredictionService.resolve_relation` takes an exact key as it is).
    literal = text.strip().lower()
    as_typed = []
    if inverse and literal:
        for index, relation in enumerate(relations):
            names = (relation.key.lower(), relation.name.lower())
            if not relation.inverse and any(name.startswith(literal) for name in names):
                as_typed.append((literal not in names, index, relation))
    first = [relation for *_, relation in sorted(as_typed, key=lambda row: row[:2])]
    ranked = []
    for index, relation in enumerate(relations):
        if inverse and not relation.inverse:
            continue
        names = (relation.name.lower(), relation.key.lower())
        if not needle or any(name.startswith(needle) for name in names):
            score = 0
        elif any(needle in name for name in names):
            score = 1
        else:
            continue
        ranked.append((score, relation.inverse, index, relation))
    if not ranked and needle:
        close = {r.key: place for place, r in enumerate(closest_relations(needle, [r for r in relations if not r.inverse]))}
        ranked = [
            (0, relation.inverse, close[relation.key], relation)
            for relation in relations
            if relation.key in close and (relation.inverse or not inverse)
        ]
    rest = [relation for *_, relation in sorted(ranked, key=lambda row: row[:3])]
    return first + [relation for relation in rest if relation not in first]


#: The badge of an entity added after training (``imf entities add``), then shorter ones for narrow lists.
ADDED_BADGES = ("not in training graph", "not in graph", "new")
ADDED_BADGE = ADDED_BADGES[0]


def entity_prompt(entity: EntityInfo, width: int = 72) -> Text:
    """``Name  key  start of the description`` in ``width`` cells; an added entity carries the longest
    of :data:`ADDED_BADGES` that leaves its name and key whole, else the shortest, which the name and
    key give way to (cut at the end, the badge told nothing)."""
    text = Text(no_wrap=True, overflow="ellipsis", end="")
    badge = ""
    if getattr(entity, "added", False):
        label = cell_len(entity.name) + 2 + cell_len(entity.key)
        badge = f" {next((b for b in ADDED_BADGES if label + 4 + len(b) <= width), ADDED_BADGES[-1])} "
    room = width - (2 + cell_len(badge) if badge else 0)
    name = truncate(entity.name, max(room - 2 - cell_len(entity.key), min(room, NAME_LEAST)))
    text.append(name, style="bold")
    key_room = room - cell_len(name) - 2
    if key_room >= 4:
        text.append("  " + truncate(entity.key, key_room), style="dim")
    if badge:
        text.append("  ")
        text.append(badge, style="bold black on magenta")
    room = width - text.cell_len - 2
    if entity.description and room > 8:
        text.append("  " + truncate(" ".join(entity.description.split()), room), style="italic dim")
    text.truncate(width, overflow="ellipsis")  # the list wraps what is wider than itself, no_wrap or not
    return text


#: The cells a suggested entity's name keeps before its key is cut away.
NAME_LEAST = 12


#: What an inverse relation's suggestion adds after its label, longest first: the longest that fits.
INVERSE_HINTS = (
    "  predicts heads · type <- for inverses", "  predicts heads · type <-", "  heads · type <-", "  type <-"
)


def relation_prompt(relation: RelationChoice, width: int = 72) -> Text:
    """The relation's label; an inverse's with the longest hint of :data:`INVERSE_HINTS` that fits in
    ``width`` cells (the list wraps what is wider than itself)."""
    text = Text(no_wrap=True, overflow="ellipsis", end="")
    text.append(relation.label)
    if relation.inverse:
        room = width - text.cell_len
        hint = next((h for h in INVERSE_HINTS if len(h) <= room), "")
        text.append(hint, style="dim")
    text.truncate(width, overflow="ellipsis")
    return text


class Suggestions(OptionList, can_focus=False):
    """A list under an input. It never takes focus: the input keeps it and drives the highlight."""

    def show(self, prompts: list[Text], *, keep_highlight: bool = False) -> None:
        """Show ``prompts``, the first highlighted (``keep_highlight``: the same row as before, when the
        prompts are the same options refitted to a new width)."""
        was = self.highlighted
        self.set_options(Option(prompt) for prompt in prompts)
        self.set_class(bool(prompts), "-open")
        if prompts:
            self.highlighted = was if keep_highlight and was is not None and was < len(prompts) else 0

    def close(self) -> None:
        self.remove_class("-open")

    @property
    def is_open(self) -> bool:
        return self.has_class("-open")


class QueryBar(Horizontal):
    """Head and relation inputs with their suggestion lists."""

    BINDINGS = [
        Binding("down", "move(1)", "Next suggestion", show=False),
        Binding("up", "move(-1)", "Previous suggestion", show=False),
        Binding("escape", "close", "Leave input"),
    ]

    def __init__(self, service: Service, *, id: str | None = None):
        super().__init__(id=id)
        self.service = service
        self.head: EntityInfo | None = None
        self.relation: RelationChoice | None = None
        self._all_relations = list(service.relations())
        self._entity_options: list[EntityInfo] = []
        #: The head text that the entity list answers; a list for older text is not picked from.
        self.suggested_for: str | None = None
        self._relation_options: list[RelationChoice] = []

    def compose(self) -> ComposeResult:
        with Vertical(id="head-field", classes="field"):
            yield QueryInput(placeholder="Head entity: type to search", id="head")
            yield Suggestions(id="head-suggestions")
        with Vertical(id="relation-field", classes="field"):
            yield QueryInput(placeholder="Relation (<- for the inverse)", id="relation")
            yield Suggestions(id="relation-suggestions")

    def use_service(self, service: Service, *, clear: bool = False) -> None:
        """Answer from another run's service; typed text stays, to be resolved against it, unless
        ``clear`` (another dataset: the text named its entities and relations, not this one's)."""
        self.service = service
        if clear:
            self.head_input.value = self.relation_input.value = ""
        self._all_relations = list(service.relations())
        self.head = self.relation = None
        self._entity_options, self._relation_options = [], []
        self.suggested_for = None
        for field in ("head", "relation"):
            self.suggestions(field).close()

    # ------------------------------------------------------------------ helpers
    @property
    def head_input(self) -> Input:
        return self.query_one("#head", Input)

    @property
    def relation_input(self) -> Input:
        return self.query_one("#relation", Input)

    def suggestions(self, field: str) -> Suggestions:
        """The list under the ``"head"`` or ``"relation"`` input."""
        return self.query_one(f"#{field}-suggestions", Suggestions)

    def _focused_field(self) -> str | None:
        focused = self.screen.focused
        if isinstance(focused, Input) and focused.id in ("head", "relation") and self in focused.ancestors:
            return focused.id
        return None

    def focus_search(self) -> None:
        self.focus_field("head")

    def focus_field(self, field: str, *, suggest: bool = False) -> None:
        """Focus the ``"head"`` or ``"relation"`` input with its text selected, ready to be replaced;
        ``suggest`` opens its list for the text (a name that matched several or none: pick from it)."""
        target = self.query_one(f"#{field}", Input)
        target.focus()
        target.select_all()
        if suggest and target.value.strip():
            if field == "head":
                self._search(target.value)
            else:
                self._show_relations(target.value)

    def set_query(self, entity: EntityInfo, relation: RelationChoice) -> None:
        """Show a resolved query in the inputs (after a query, or when a row becomes the head)."""
        self.head, self.relation = entity, relation
        if self.head_input.value != entity.name:
            self.head_input.value = entity.name
        if self.relation_input.value != relation.label:
            self.relation_input.value = relation.label
        for field in ("head", "relation"):
            self.suggestions(field).close()

    # ------------------------------------------------------------- head search
    @on(Input.Changed, "#head")
    def _head_changed(self, event: Input.Changed) -> None:
        if self.head is not None and event.value == self.head.name:
            return
        self.head = None
        if not event.value.strip():
            self.suggestions("head").close()
            return
        self._search(event.value)

    @work(thread=True, exclusive=True, group="suggest", exit_on_error=False)
    def _search(self, text: str) -> None:
        try:
            found = self.service.search_entities(text, limit=SUGGESTIONS)
        except Exception as error:  # a search error must not end the app: say it, and keep the app up
            if not get_current_worker().is_cancelled:
                busy = "locked" in str(error) or "busy" in str(error).lower()
                self.post_message(Notice(
                    "Search: the dataset is busy (another imf process is writing it); type again in a moment."
                    if busy else f"Search failed: {str(error) or type(error).__name__}",
                    error=not busy,
                ))
            found = []
        if not get_current_worker().is_cancelled:
            self.post_message(SuggestionsReady(text, found))

    def on_resize(self) -> None:
        """The lists' prompts were cut to the old width: wider ones wrapped (two lines each at 80 columns
        after 120), narrower ones stayed short. Refit the open ones, once the fields have their new size."""
        self.call_after_refresh(self._refit_suggestions)

    def _prompt_width(self, field: str) -> int:
        """The cells a prompt of ``field``'s list may take: the list's own width, so that no prompt wraps."""
        return max(self.query_one(f"#{field}-field").size.width - 6, 12)

    def _refit_suggestions(self) -> None:
        for field, options, prompt in (
            ("head", self._entity_options, entity_prompt), ("relation", self._relation_options, relation_prompt),
        ):
            suggestions = self.suggestions(field)
            if suggestions.is_open and options:
                suggestions.show([prompt(option, self._prompt_width(field)) for option in options],
                                 keep_highlight=True)

    @on(SuggestionsReady)
    def _show_entities(self, message: SuggestionsReady) -> None:
        message.stop()
        if message.text != self.head_input.value or self._focused_field() != "head":
            return
        self._entity_options = message.entities
        self.suggested_for = message.text
        width = self._prompt_width("head")
        self.suggestions("head").show([entity_prompt(e, width) for e in message.entities])

    # --------------------------------------------------------------- relations
    @on(Input.Changed, "#relation")
    def _relation_changed(self, event: Input.Changed) -> None:
        if self.relation is not None and event.value == self.relation.label:
            return
        self.relation = None
        if self._focused_field() == "relation":
            self._show_relations(event.value)

    def _show_relations(self, text: str) -> None:
        self._relation_options = match_relations(self._all_relations, text)
        width = self._prompt_width("relation")
        self.suggestions("relation").show([relation_prompt(r, width) for r in self._relation_options])

    # ------------------------------------------------------------------- focus
    def on_descendant_focus(self) -> None:
        field = self._focused_field()
        if field == "relation" and self.relation is None:
            self._show_relations(self.relation_input.value)
        self.call_after_refresh(self._close_unfocused)

    def on_descendant_blur(self) -> None:
        self.call_after_refresh(self._close_unfocused)

    def _close_unfocused(self) -> None:
        field = self._focused_field()
        for name in ("head", "relation"):
            if name != field:
                self.suggestions(name).close()

    # ----------------------------------------------------------------- actions
    def action_move(self, step: int) -> None:
        field = self._focused_field()
        suggestions = self.suggestions(field) if field else None
        if suggestions is None or not suggestions.is_open:
            raise SkipAction()
        if step > 0:
            suggestions.action_cursor_down()
        else:
            suggestions.action_cursor_up()

    def action_close(self) -> None:
        """Close the open list; with none open, leave the input for the results."""
        field = self._focused_field()
        if field is None:
            raise SkipAction()
        if self.suggestions(field).is_open:
            self.suggestions(field).close()
        else:
            self.post_message(LeaveInput())

    @on(OptionList.OptionSelected)
    def _clicked(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        field = "head" if event.option_list.id == "head-suggestions" else "relation"
        self._pick(field, event.option_index)
        self._submit_or_advance(picked=field)

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        field = event.input.id
        suggestions = self.suggestions(field)
        stale = field == "head" and self.suggested_for != event.value
        picked = None
        if suggestions.is_open and suggestions.highlighted is not None and not stale:
            self._pick(field, suggestions.highlighted)
            picked = field
        self._submit_or_advance(picked=picked)

    def _pick(self, field: str, index: int) -> None:
        if field == "head" and index < len(self._entity_options):
            self.head = self._entity_options[index]
            self.head_input.value = self.head.name
            self.head_input.cursor_position = len(self.head.name)
        elif field == "relation" and index < len(self._relation_options):
            self.relation = self._relation_options[index]
            self.relation_input.value = self.relation.label
            self.relation_input.cursor_position = len(self.relation.label)
        self.suggestions(field).close()

    def _submit_or_advance(self, *, picked: str | None = None) -> None:
        """Run the query when both fields are filled; else focus the empty one and say what it needs.

        A head just picked from the list does not run the query (``picked == "head"``): Enter again does.
        """
        head_text = self.head_input.value.strip()
        relation_text = self.relation_input.value.strip()
        if not head_text:
            self.head_input.focus()
            self.post_message(Notice("Type a head entity first: a name, a key, or words of its description."))
        elif not relation_text:
            self.relation_input.focus()
            if picked is None:
                self.post_message(Notice("Now pick a relation (<- for an inverse, which predicts heads)."))
        elif picked == "head":
            relation = self.relation.label if self.relation else relation_text
            self.post_message(Notice(f"Enter ranks ({self.head_input.value}, {relation}, ?); Tab changes the relation."))
        else:
            self.post_message(QueryRequested(self.head or head_text, self.relation or relation_text))
