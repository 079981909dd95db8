"""The help screen (``?``): keys, and what the numbers and bars mean."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

KEYS = [
    ("/", "search: focus the head-entity input"),
    ("↑ ↓", "move through suggestions, or through the results"),
    ("Enter", "pick a suggestion / run the query; on a result: explore from that entity"),
    ("Tab", "next field"),
    ("f", "show or hide answers already known in train, valid or test"),
    ("k", "rows shown: 10, 20, 50, 100"),
    ("b", "back to the previous query"),
    ("?", "this help"),
    ("q", "quit (Ctrl+Q anywhere)"),
]

MEANING = """\
A query (head, relation, ?) ranks every entity as the tail. A relation written ← relation is an \
inverse: it asks for the heads of (?, relation, entity).

fused: the model's decision fusion of the branch logits, Σ weight × logit, with the weights it \
learned for this relation. Ranks follow it.

structure · visual · text · multimodal: each branch's own logit. The bar is sigmoid(logit), the \
branch's probability that the triple holds (a full bar is 1.0); each branch is trained on its own \
with binary cross-entropy. The underlined number is the branch that adds most to the fused score.

Detail pane: w×logit is each branch's contribution (they sum to fused); share is |w×logit| over \
Σ |w×logit|.

known: the triple is already a fact of that split. Known answers are hidden by default (filtered \
ranking, as in evaluation); f shows them, and the status line says how many were hidden.

Supporting facts come from the training graph: triples linking the two entities, or each to a \
neighbour of the other. The image preview is drawn with half blocks and needs a colour terminal."""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape", "dismiss", "Close"),
        Binding("question_mark", "dismiss", "Close", show=False),
        Binding("q", "dismiss", "Close", show=False),
    ]

    def compose(self) -> ComposeResult:
        keys = Table(box=None, padding=(0, 2, 0, 0), show_header=False)
        keys.add_column(style="bold cyan", no_wrap=True)
        keys.add_column()
        for key, action in KEYS:
            keys.add_row(key, action)
        with VerticalScroll(id="help"):
            yield Static(
                Group(Text("imf explore", style="bold"), Text(""), keys, Text(""), Text(MEANING)),
                id="help-text",
            )
