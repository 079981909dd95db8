"""An :class:`~imf_cli.explain.Explanation` as rich renderables, for ``imf explain`` and the explore detail pane.

Imports rich and the CLI's table helpers (no Textual, no torch). Branch colours and bars come from
the explore renderers, so the CLI and the TUI draw a branch's share the same way.
"""

from __future__ import annotations

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.table import Table
from rich.text import Text

from imf_cli.explain import BranchContribution, Explanation
from imf_cli.output import count, fit_columns, left_out_note, natural_widths
from imf_cli.service import SPLITS
from imf_cli.tui.render import bar, colour, truncate


def _splits(splits) -> str:
    return ", ".join(s for s in SPLITS if s in splits)


def triple_text(explanation: Explanation) -> Text:
    """``(France, borders, Germany)``, or ``(?, borders, Germany) → France`` for an inverse query."""
    head, tail, relation = explanation.head.name, explanation.tail.name, explanation.relation
    if relation.inverse:
        return Text(f"({tail}, {relation.name}, {head})")
    return Text(f"({head}, {relation.name}, {tail})")


def _rank(rank: float) -> str:
    """``"12,838"``, or ``"3.5"`` for the realistic rank of a tie: never an exponent."""
    return f"{rank:,.0f}" if float(rank).is_integer() else f"{rank:,.1f}"


def summary(explanation: Explanation) -> Text:
    """The rank, the score and the known-fact flags, in two lines."""
    text = Text()
    noun = "heads" if explanation.relation.inverse else "tails"
    text.append(f"rank {_rank(explanation.rank)}", style="bold")
    # Without include_new an added tail is ranked among the graph's entities, not among the other added
    # ones; with it, among all of them (as imf predict --include-new ranks them): the line says which.
    added = explanation.added_candidates
    if added:
        among = f"the graph's entities and {count(added, 'added entity', 'added entities')}; "
    else:
        among = "the graph's entities and this one; " if not explanation.tail_in_graph else ""
    # The filter of test ranking (every split's known answers): imf eval ranks valid with train + valid only,
    # so a valid triple's rank here can be better than in eval's valid report.
    text.append(
        f" of {explanation.candidates:,} {noun} ({among}filtered of train, valid and test; unfiltered "
        f"{_rank(explanation.raw_rank)})"
    )
    score = f"{explanation.scored_by[0]} score" if len(explanation.scored_by) == 1 else "fused"
    text.append(f" · {score} {explanation.fused:+.2f} · p {explanation.probability:.2f}\n")
    if explanation.known:
        text.append(f"known fact: {_splits(explanation.known)}", style="yellow")
    else:
        text.append("not a known fact", style="dim")
    for end, in_graph in ((explanation.head, explanation.head_in_graph), (explanation.tail, explanation.tail_in_graph)):
        if not in_graph:
            text.append(f" · {end.name} is not in the training graph", style="magenta")
    if explanation.filtered_count:
        text.append(f"\nfiltered {explanation.filtered_count} known answer{'s' if explanation.filtered_count > 1 else ''}: ")
        shown = ", ".join(f"{f.entity.name} ({_splits(f.splits)}{', above' if f.above else ''})" for f in explanation.filtered)
        text.append(shown + (" …" if explanation.filtered_count > len(explanation.filtered) else ""), style="dim")
    return text


class ContributionsTable:
    """Per branch: weight, logit (unless ``logits`` is False), probability, weight × probability and its
    share, with a bar ``width`` cells wide.

    It fits the width it is drawn in and never cuts a figure: where that is narrow, the bar narrows
    (down to none; the percentage stays), then whole columns go (logit, p, weight, w×p), named in a
    caption. ``missing`` says where the left-out figures are.
    """

    EXPENDABLE = ("logit", "p", "weight", "w×p")

    def __init__(
        self, contributions: tuple[BranchContribution, ...], *, width: int = 8, logits: bool = True,
        missing: str = "imf explain --json has them",
    ):
        self.contributions = contributions
        self.bar_width = width
        self.logits = logits
        self.missing = missing

    def _cells(self, c: BranchContribution, bar_width: int) -> dict[str, Text | str]:
        share = Text(bar(c.share, bar_width), style=f"{colour(c.branch)} on #3a3a3a") if bar_width else Text()
        share.append(f"{c.share:{5 if bar_width else 4}.0%}", style=colour(c.branch))
        cells = {"branch": Text(c.branch, style=colour(c.branch)), "weight": f"{c.weight:.2f}",
                 "logit": f"{c.logit:+.2f}", "p": f"{c.probability:.2f}", "w×p": f"{c.contribution:.3f}", "share": share}
        if not self.logits:
            del cells["logit"]
        return cells

    def table(self, max_width: int) -> Table:
        """The table for ``max_width`` cells (see the class docstring)."""
        headers = ["branch", "weight", "logit", "p", "w×p", "share"]
        if not self.logits:
            headers.remove("logit")

        for bar_width in dict.fromkeys((self.bar_width, 4, 2, 0)):  # narrower bars first, then fewer columns
            cells = [self._cells(c, bar_width) for c in self.contributions]
            widths = natural_widths(headers, [[row[h] for h in headers] for row in cells])
            if sum(widths.values()) + len(widths) - 1 <= max_width:
                break
        expendable = tuple(h for h in self.EXPENDABLE if h in widths)
        shown, left_out = fit_columns(widths, expendable, max_width, gap=1)
        note = left_out_note(left_out, self.missing)
        table = Table(box=None, padding=(0, 1, 0, 0), pad_edge=False, show_edge=False, header_style="bold",
                      caption=note, caption_justify="left", caption_style="dim")
        for name in shown:
            table.add_column(name, justify="left" if name in ("branch", "share") else "right", no_wrap=True)
        for row in cells:
            table.add_row(*(row[name] for name in shown))
        return table

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.table(options.max_width)


#: The name the callers use.
contributions_table = ContributionsTable


def evidence_text(explanation: Explanation) -> Text:
    """The facts and paths that link the two ends, with their rules' confidence."""
    text = Text()
    if not (explanation.head_in_graph and explanation.tail_in_graph):
        text.append("None: an entity outside the training graph has no facts.", style="dim")
        return text
    if not explanation.evidence:
        text.append("No fact or two-fact path links them in train.", style="dim")
        return text
    stored = explanation.relation.name
    for index, item in enumerate(explanation.evidence):
        if index:
            text.append("\n")
        text.append(f"{item.confidence:4.0%} ", style="bold")
        text.append(item.sentence)
        body = " → ".join(r.label for r in item.body)
        unit = "pair" if len(item.facts) == 1 else "path"
        text.append(f"   [{body} ⇒ {stored}: {item.support} {unit}{'s' if item.support != 1 else ''}]", style="dim")
    return text


def neighbours_table(explanation: Explanation) -> Table:
    """Per branch and end: the nearest entities (cosine) and their own facts of the relation in train.

    A head's neighbour ``n`` shows ``→ a, b`` for its facts ``(n, R, a)``; a tail's neighbour ``m``
    shows ``a, b →`` for ``(a, R, m)``.
    """
    table = Table(box=None, padding=(0, 1, 0, 0), pad_edge=False, show_edge=False, header_style="bold")
    # The branch and the cosine are never cut; long names fold (DBpedia's titles) instead of ending in "…".
    branches = [group.branch for group in explanation.neighbours]
    table.add_column("branch", no_wrap=True, min_width=max(map(len, branches), default=6))
    # No minimum widths on the folding columns: rich honours them even past the terminal's width, and
    # the console then crops the line (at 50 columns 'Information' lost its 'n').
    table.add_column("of", overflow="fold")
    table.add_column("neighbour", overflow="fold")
    table.add_column("cos", no_wrap=True, justify="right", min_width=5)
    # Text: names are never markup, here or in the TUI
    table.add_column(Text(f"its {explanation.relation.label} facts"), overflow="fold")
    for group in explanation.neighbours:
        first = True
        for end, side, is_head in ((explanation.head, group.head, True), (explanation.tail, group.tail, False)):
            label = Text(group.branch if first else "", style=colour(group.branch))
            if not side:
                table.add_row(label, Text(end.name), Text("n/a (not in this branch)", style="dim"), "", "")
                first = False
                continue
            for position, neighbour in enumerate(side):
                names = ", ".join(a.name for a in neighbour.answers)
                more = neighbour.answer_count - len(neighbour.answers)
                names += f" +{more}" if more > 0 else ""
                facts = (f"→ {names}" if is_head else f"{names} →") if names else ""
                table.add_row(
                    Text(group.branch if first else "", style=colour(group.branch)),
                    Text(end.name if position == 0 else ""),
                    Text(neighbour.entity.name),
                    f"{neighbour.similarity:.2f}",
                    Text(facts or "—", style="" if facts else "dim"),
                )
                first = False
    return table


def neighbours_text(explanation: Explanation, *, per_end: int = 3) -> Text:
    """The nearest neighbours, compactly: one line per branch and end (for the explore detail pane)."""
    text = Text()
    for group in explanation.neighbours:
        for end, side in ((explanation.head, group.head), (explanation.tail, group.tail)):
            if text:
                text.append("\n")
            text.append(f"{group.branch:<10}", style=colour(group.branch))
            text.append(f" {truncate(end.name, 14)} ≈ ", style="dim")
            if not side:
                text.append("n/a (not in this branch)", style="dim")
                continue
            text.append(", ".join(f"{n.entity.name} {n.similarity:.2f}" for n in side[:per_end]))
    return text


def _sections(*sections: tuple[str, RenderableType]) -> list[RenderableType]:
    """Each ``(title, body)`` after a blank line, the title in bold."""
    return [part for title, body in sections for part in (Text(""), Text(title, style="bold"), body)]


def explanation_renderable(explanation: Explanation) -> RenderableType:
    """Everything, as one group of titled sections (``imf explain``)."""
    title = Text("Why ", style="bold")
    title.append(triple_text(explanation))
    title.append("?", style="bold")
    scored = Text(f"scored by {', '.join(explanation.scored_by)}", style="dim")
    if len(explanation.scored_by) == 1:  # no decision to split: the one branch's score is the ranking
        scored = Text(f"scored by the {explanation.scored_by[0]} branch alone (no decision fusion)", style="dim")
        contributions = ()
    else:
        contributions = (("Branch contributions (weight × probability)", contributions_table(explanation.contributions)),)
    return Group(
        title,
        summary(explanation),
        scored,
        *_sections(
            *contributions,
            ("Evidence from the training graph (rule confidence)", evidence_text(explanation)),
            ("Nearest neighbours in each branch's space", neighbours_table(explanation)),
        ),
    )


def pane_renderable(explanation: Explanation) -> RenderableType:
    """The explanation for the explore detail pane, below its contributions table: rank, evidence, neighbours."""
    return Group(
        summary(explanation),
        *_sections(("Evidence", evidence_text(explanation)), ("Nearest neighbours (cosine)", neighbours_text(explanation))),
    )
