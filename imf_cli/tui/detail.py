"""The detail pane for the highlighted candidate: what it is, what each branch says, and why.

The fast parts (description, image, each branch's weight × probability and share) come from the
prediction itself; the image is drawn by textual-image (:mod:`imf_cli.tui.preview`). The rest of
``imf explain``'s answer (the rank and the filtered answers, the evidence from the training graph,
the nearest neighbours) is fetched in a thread worker (:meth:`Service.explain`), which posts
:class:`~imf_cli.tui.messages.DetailReady`; a service that cannot explain gives the supporting facts.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual import events, on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Static
from textual.worker import get_current_worker

from imf_cli.explain import contributions_of
from imf_cli.explain_view import contributions_table, pane_renderable
from imf_cli.scoring import sigmoid
from imf_cli.service import Fact, Prediction, QueryResult, Service
from imf_cli.tui.locked import LockedService
from imf_cli.tui.messages import DetailReady
from imf_cli.tui.preview import image_widget, show_image
from imf_cli.tui.render import display_path, fit_lines, known_label, truncate

FACTS = 5
#: Descriptions are cut after this many characters, and to the lines the pane gives them (the
#: ``max-height`` of ``#detail-description``), ending in "…"; ``imf search`` shows them whole.
DESCRIPTION_CHARS = 320
DESCRIPTION_LINES = 12


class FittedText(Static):
    """A Static that keeps its whole text and shows what fits in ``lines`` lines of its width, ending in "…".

    The pane's ``max-height`` alone cropped a long description mid-sentence without a sign.
    """

    def __init__(self, *, lines: int, id: str | None = None):
        super().__init__(id=id)
        self.lines = lines
        self._text = Text()

    def show_text(self, text: Text) -> None:
        self._text = text
        self._fit(self.content_size.width)

    def on_resize(self, event: events.Resize) -> None:
        self._fit(self.content_size.width)

    def _fit(self, width: int) -> None:
        self.update(fit_lines(self._text, width, self.lines) if width > 1 else self._text)


def triple_ends(result: QueryResult, prediction: Prediction) -> tuple[int, int]:
    """(head, tail) of the triple a row stands for; an inverse relation swaps them."""
    if result.relation.inverse:
        return prediction.entity.id, result.entity.id
    return result.entity.id, prediction.entity.id


def fusion_table(result: QueryResult, prediction: Prediction) -> Table:
    """Per branch that scored the row: its weight (renormalised over those branches), probability, weight ×
    probability and share (:func:`imf_cli.scoring.branch_shares`, as the table's bars); narrow enough
    for the pane, so without the logit (``imf explain`` shows it)."""
    return contributions_table(
        contributions_of(result.weights, prediction.branches), width=3, logits=False, missing="imf explain has them"
    )


def facts_text(facts: list[Fact] | None) -> Text:
    text = Text("Supporting facts", style="bold")
    text.append(" (training graph)\n", style="dim")
    if facts is None:
        text.append("…", style="dim")
    elif not facts:
        text.append("None link the two or their neighbours.", style="dim")
    for index, fact in enumerate(facts or ()):
        if index:
            text.append("\n")
        text.append(fact.head.name)
        text.append(f" —{fact.relation.label}→ ", style="dim")
        text.append(fact.tail.name)
        if fact.split != "train":
            text.append(f"  {fact.split}", style="yellow")
    return text


class DetailPane(VerticalScroll):
    """Shows one :class:`Prediction` of the current :class:`QueryResult`."""

    def __init__(self, service: Service, *, id: str | None = None, image: str = "auto"):
        """``service`` is wrapped in a :class:`~imf_cli.tui.locked.LockedService` unless it is one (the app
        passes its own, so that the pane and the queries share one lock)."""
        super().__init__(id=id)
        self.service = service if isinstance(service, LockedService) else LockedService(service)
        self.image_mode = image
        self.shown: tuple[int, int] | None = None
        self.result: QueryResult | None = None

    def compose(self) -> ComposeResult:
        with Horizontal(id="detail-columns"):
            with Vertical(id="detail-about"):
                yield Static(id="detail-title")
                with Horizontal(id="detail-top"):
                    yield image_widget(self.image_mode, id="detail-preview")
                    yield FittedText(lines=DESCRIPTION_LINES, id="detail-description")
                yield Static(id="detail-image")
            with Vertical(id="detail-scores"):
                yield Static(id="detail-fusion")
                yield Static(id="detail-facts")

    def on_resize(self, event: events.Resize) -> None:
        """Draw the image again: its cells were sized for the pane's old width (the pane moves under the
        table below 120 columns, and its image column narrows)."""
        preview = self.query_one("#detail-preview")
        path = getattr(preview, "image", None)
        if preview.display and path is not None:
            preview.image = None
            show_image(preview, path)

    def _static(self, name: str) -> Static:
        return self.query_one(f"#detail-{name}", Static)

    def clear(self, message: str = "") -> None:
        self.shown = self.result = None
        self.scroll_home(animate=False)
        self._static("title").update(Text(message, style="dim"))
        self.query_one("#detail-description", FittedText).show_text(Text())
        for name in ("image", "fusion", "facts"):
            self._static(name).update("")
        show_image(self.query_one("#detail-preview"), None)

    def show(self, result: QueryResult, prediction: Prediction | None) -> None:
        if prediction is None:
            hidden = result.hidden_known if result is not None else 0
            known = f" Press f to show the {hidden} known answer{'s' if hidden != 1 else ''}." if hidden else ""
            self.clear(f"No candidates to show.{known}")
            return
        key = (id(result), prediction.entity.id)
        if key == self.shown:
            return
        self.shown, self.result = key, result
        self.scroll_home(animate=False)  # another candidate: its name and rank, not the last one's middle
        entity = prediction.entity

        title = Text()
        title.append(entity.name, style="bold")
        title.append(f"  {entity.key}", style="dim")
        alone = next(iter(result.weights)) if len(result.weights) == 1 else None  # one branch scores the row
        score = f"{alone} score" if alone else "fused"
        probability = sigmoid(prediction.fused)
        title.append(f"\nrank {prediction.rank} · {score} {prediction.fused:.3f} · p {probability:.3f}\n")
        known = known_label(prediction.known)
        title.append(f"known: {known}" if known else "not a known fact", style="yellow" if known else "dim")
        if not prediction.in_graph:
            title.append("  not in training graph", style="bold magenta")
        self._static("title").update(title)

        description = truncate(" ".join((entity.description or "").split()), DESCRIPTION_CHARS)
        self.query_one("#detail-description", FittedText).show_text(
            Text(description or "No description.", style="" if description else "dim"))
        preview = self.query_one("#detail-preview")
        drawing = not isinstance(preview, Static) and not self.app.no_color  # --image none: a placeholder
        readable = False
        if entity.image and Path(entity.image).is_file() and drawing:
            readable = show_image(preview, entity.image)
        else:
            show_image(preview, None)
        if entity.image:
            missing = "" if Path(entity.image).is_file() else " (file missing)"
            unreadable = " (unreadable)" if Path(entity.image).is_file() and not readable and drawing else ""
            self._static("image").update(Text(f"Image: {display_path(entity.image)}{missing}{unreadable}", style="dim"))
        else:
            self._static("image").update(Text("No image.", style="dim"))

        if alone:  # no decision to split: the one branch's score is the ranking
            self._static("fusion").update(Text(f"Why: the {alone} branch alone scores this query.", style="bold"))
        else:
            weights = Text(f"Why: {result.relation.label}, weight × probability", style="bold")
            self._static("fusion").update(Group(weights, fusion_table(result, prediction)))
        self._static("facts").update(Text("…", style="dim"))
        self._load(key, result, prediction)

    @work(thread=True, exclusive=True, group="detail", exit_on_error=False)
    def _load(self, key: tuple[int, int], result: QueryResult, prediction: Prediction) -> None:
        explanation = facts = None
        worker = get_current_worker()
        try:
            # Holding the cursor key down asks for one explanation per row passed: only the newest is
            # computed, the others give up once they hold the service's lock.
            # ranked among the added entities too where the list was, so the pane's rank is the list's
            options = {"include_new": True} if result.include_new else {}
            ran, explanation = self.service.call_unless(
                lambda: worker.is_cancelled, "explain", result.entity.id, result.relation.id, prediction.entity.id,
                **options,
            )
            if not ran:
                return
        except Exception:  # an explanation is a nicety: fall back to the supporting facts
            try:
                facts = self.service.supporting_facts(*triple_ends(result, prediction), limit=FACTS)
            except Exception:  # nor must their failure end the app
                facts = []
        if not worker.is_cancelled:
            self.post_message(DetailReady(key, facts, explanation))

    @on(DetailReady)
    def _ready(self, message: DetailReady) -> None:
        message.stop()
        if message.key != self.shown:
            return
        if message.explanation is not None:
            self._static("facts").update(pane_renderable(message.explanation))
        else:
            self._static("facts").update(facts_text(message.facts))
