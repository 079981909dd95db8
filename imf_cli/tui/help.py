"""The help screen (``?``): keys, and what the numbers and bars mean."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Static

KEYS = [
    ("F1", "this help (works while typing, as do Ctrl+Q and Escape)"),
    ("Ctrl+Q", "quit"),
    ("Escape", "close a suggestion list; with none open, leave the input for the results"),
    ("/", "search: focus the head-entity input"),
    ("↑ ↓", "move through suggestions, or through the results"),
    ("Enter", "pick a suggestion / run the query; on a result (or a click on the highlighted one): explore "
              "from that entity"),
    ("Tab", "next field"),
    ("f", "show or hide answers already known in train, valid or test"),
    ("n", "rank the entities added after training (imf entities add) too, or not"),
    ("k", "rows shown: 10, 20, 50, 100"),
    ("b", "back to the previous query"),
    ("d", "show or hide the detail pane (hidden at first on a short terminal)"),
    ("r", "runs: list them, and open another"),
    ("Home End", "first and last row of the results or the runs"),
    ("PgUp PgDn", "a page up or down in the results or the runs"),
    ("? q", "help and quit, outside the inputs (here, ? q and Escape close this help)"),
]

MEANING = """\
A query (head, relation, ?) ranks every entity as the tail. A relation written ← relation (type <- or \
<) is an inverse: it asks for the heads of (?, relation, entity). Picking a new head from the list \
does not run the query yet: Enter does.

fused: the model's decision fusion of the branch logits, Σ weight × logit, with the weights it \
learned for this relation. Ranks follow it.

structure · visual · text · multimodal (struct and multi at 80 columns, S V T M narrower; below about 60 columns a single top column names the branch with the largest share): each branch's share of the fused decision, weight × \
probability normalised over the branches (share = w·σ(logit) / Σ w·σ(logit)): large when the fusion \
trusts the branch for this relation and the branch believes the triple. The largest is underlined.

Detail pane (as imf explain, which also gives each logit): per branch, its weight, probability \
(p), weight × probability (w×p) and the same share as the bars; the candidate's filtered rank and the known answers the filter left out; \
facts and two-hop paths of the training graph that link the two, ranked by how reliably their \
relations imply this one in train (rule confidence); and each end's nearest entities in every \
branch's space.

Entities added after training (imf entities add) carry a "not in training graph" badge in the \
suggestions ("not in graph" or "new" where the list is narrow). They have no structure vector: the branches with their features score them, with the \
weights renormalised over those branches, and the structure column shows n/a. n ranks them among \
the candidates.

known: the triple is already a fact of that split. Known answers are hidden by default (filtered \
ranking, as in evaluation); f shows them, and the status line says how many were hidden.

The image is drawn with the terminal's graphics protocol (Kitty or Sixel) \
where it has one, else with coloured half blocks."""


class QuitHint:
    """Ctrl+C on a modal screen: it copies a selection, else says how to quit, as on the main screen.
    (The app's Ctrl+C does not reach a modal screen, and the screen's own copy did nothing there.)"""

    CTRL_C = Binding("ctrl+c", "copy_or_quit_hint", show=False)

    def action_copy_or_quit_hint(self) -> None:
        selection = self.get_selected_text()
        if selection:
            self.app.copy_to_clipboard(selection)
        else:  # Textual's own hint looks for a quit key among this screen's bindings, and finds none here
            self.app.notify("Press [b]ctrl+q[/b] to quit the app", title="Do you want to quit?")


class HelpScreen(QuitHint, ModalScreen[None]):
    BINDINGS = [
        QuitHint.CTRL_C,
        Binding("escape", "dismiss", "Close"),
        Binding("question_mark", "dismiss", "Close", show=False),
        Binding("q", "dismiss", "Close", show=False),
        Binding("f1", "dismiss", "Close", show=False, priority=True),
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
        yield Footer()  # this screen's keys: the one underneath would list keys that do nothing here
