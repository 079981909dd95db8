"""`PredictionService.explain`: contributions, rank and filter, rule evidence, neighbours; graph and added entities."""

from __future__ import annotations

import json

import pytest
import torch

from imf_cli.scoring import branch_shares
from imf_cli.service import PredictionService
from kgdata.errors import ImfError, UnknownEntityError


@pytest.fixture
def service(places_run, monkeypatch):
    monkeypatch.setenv("IMF_HOME", str(places_run[0]))
    with PredictionService.from_run(places_run[1], device="cpu") as opened:
        yield opened


def ids(service, *names):
    return [service.resolve_entity(name).id for name in names]


def realistic(scores: list[float], target: float) -> float:
    return (1 + sum(s > target for s in scores) + sum(s >= target for s in scores)) / 2


def test_contributions_and_rank_agree_with_the_ranked_list(service):
    france, germany, spain = ids(service, "france", "germany", "spain")
    borders = service.resolve_relation("borders").id
    explanation = service.explain(france, borders, germany)
    everything = {p.entity.id: p for p in service.top_k(france, borders, k=100, include_known=True).predictions}
    row = everything[germany]
    assert explanation.fused == pytest.approx(row.fused, abs=1e-5)
    assert explanation.scored_by == ("structure", "visual", "text", "multimodal")
    shares = branch_shares({c.branch: c.weight for c in explanation.contributions}, row.branches)
    for contribution in explanation.contributions:
        assert contribution.logit == pytest.approx(row.branches[contribution.branch], abs=1e-5)
        assert contribution.contribution == pytest.approx(contribution.weight * contribution.probability)
        assert contribution.share == pytest.approx(shares[contribution.branch])
    assert sum(c.weight for c in explanation.contributions) == pytest.approx(1.0)

    # The filter leaves out the other known answer (spain, a test fact), and only it.
    assert explanation.known == {"train"}
    assert [(f.entity.id, f.splits) for f in explanation.filtered] == [(spain, frozenset({"test"}))]
    assert explanation.filtered_count == 1 and explanation.candidates == service.num_graph_entities - 1
    kept = [p.fused for i, p in everything.items() if i != spain]
    assert explanation.rank == realistic(kept, row.fused)
    assert explanation.raw_rank == realistic([p.fused for p in everything.values()], row.fused)
    assert explanation.filtered[0].above == (everything[spain].fused > row.fused)


def test_evidence_is_ranked_by_rule_confidence_and_reads_as_sentences(service):
    france, germany = ids(service, "france", "germany")
    explanation = service.explain(france, service.resolve_relation("borders").id, germany)
    direct, path = explanation.evidence[0], explanation.evidence[1]
    # borders⁻¹ ⇒ borders holds for 4 of the 5 pairs linked by borders⁻¹ in train (france–spain is a test fact).
    assert direct.sentence == "Germany borders France"
    assert [r.label for r in direct.body] == ["← borders"]
    assert (direct.confidence, direct.support) == (pytest.approx(0.8), 4)
    # in ∘ in⁻¹ ⇒ borders: 6 paths through Europe between France, Germany and Portugal, 2 of them border facts.
    assert path.sentence == "France in Europe; Germany in Europe"
    assert [r.label for r in path.body] == ["in", "← in"]
    assert (path.confidence, path.support) == (pytest.approx(1 / 3), 2)
    assert len(explanation.evidence) == 2


def test_an_inverse_query_explains_the_stored_fact_and_ranks_heads(service):
    france, germany = ids(service, "france", "germany")
    borders = service.resolve_relation("borders")
    inverse = service.resolve_relation("← borders")
    explanation = service.explain(germany, inverse.id, france)  # (?, borders, germany): is france a head?
    assert explanation.relation == inverse
    assert explanation.evidence[0].sentence == "Germany borders France"  # the fact read the other way
    heads = {p.entity.id: p.fused for p in service.top_k(germany, inverse.id, k=100, include_known=True).predictions}
    assert explanation.fused == pytest.approx(heads[france], abs=1e-5)
    assert service.explain(france, borders.id, germany).evidence[0].sentence == explanation.evidence[0].sentence


def test_neighbours_come_from_each_branch_with_their_own_answers(service):
    france, germany = ids(service, "france", "germany")
    borders = service.resolve_relation("borders").id
    explanation = service.explain(france, borders, germany)
    assert [n.branch for n in explanation.neighbours] == ["structure", "visual", "text", "multimodal"]
    for group in explanation.neighbours:
        unit = torch.nn.functional.normalize(service.scorer.entities[group.branch], dim=1)
        for end, side in ((france, group.head), (germany, group.tail)):
            assert len(side) == 3 and end not in [n.entity.id for n in side]
            similarities = [n.similarity for n in side]
            assert similarities == sorted(similarities, reverse=True)
            expected = (unit @ unit[end]).tolist()
            assert all(n.similarity == pytest.approx(expected[n.entity.id], abs=1e-5) for n in side)
        for neighbour in group.head:  # a head's neighbour shows its own borders tails in train
            tails = service.known(neighbour.entity.id, borders)["train"].tolist()
            assert neighbour.answer_count == len(tails) and {a.id for a in neighbour.answers} <= set(tails)
    json.dumps(explanation.to_dict())


def test_an_added_head_is_explained_from_its_feature_branches(service):
    lyon, france = ids(service, "lyon", "france")
    capital = service.resolve_relation("capital_of").id
    explanation = service.explain(lyon, capital, france)
    assert not explanation.head_in_graph and explanation.tail_in_graph
    assert explanation.scored_by == ("visual", "text", "multimodal")
    assert explanation.evidence == () and explanation.filtered == () and explanation.known == frozenset()
    assert [n.branch for n in explanation.neighbours] == ["structure", "visual", "text", "multimodal"]
    assert explanation.neighbours[0].head == () and len(explanation.neighbours[0].tail) == 3  # no structure vector
    ranked = service.top_k(lyon, capital, k=100)
    assert explanation.rank == [p.entity.id for p in ranked.predictions].index(france) + 1
    assert explanation.fused == pytest.approx(next(p.fused for p in ranked.predictions if p.entity.id == france), abs=1e-5)


def test_an_added_tail_is_ranked_among_the_graph_and_itself(service):
    france, lyon = ids(service, "france", "lyon")
    borders = service.resolve_relation("borders").id
    explanation = service.explain(france, borders, lyon)
    assert not explanation.tail_in_graph and explanation.scored_by == ("visual", "text", "multimodal")
    assert explanation.filtered_count == 2  # germany (train) and spain (test)
    assert explanation.candidates == service.num_graph_entities + 1 - 2
    rows = service.top_k(france, borders, k=100, include_new=True).predictions
    assert explanation.rank == [p.entity.id for p in rows].index(lyon) + 1
    from imf_cli.explain_view import summary

    assert "tails (the graph's entities and this one; filtered of train, valid and test; unfiltered" in summary(explanation).plain


def test_explain_errors(service):
    blank, france = ids(service, "blank", "france")
    with pytest.raises(ImfError, match="no branch of this run can score it; it needs an image or a description"):
        service.explain(blank, 0, france)
    with pytest.raises(UnknownEntityError):
        service.explain(france, 0, 10_000)
    with pytest.raises(UnknownEntityError):
        service.explain(france, 99, france)


def test_explain_cli_prints_the_same_explanation_as_text_and_json(service, places_run, monkeypatch):
    from typer.testing import CliRunner

    from imf_cli.main import app

    monkeypatch.setenv("IMF_HOME", str(places_run[0]))
    runner = CliRunner()
    args = ["explain", str(places_run[1]), "--head", "France", "--relation", "borders", "--tail", "Germany"]
    as_json = runner.invoke(app, [*args, "--json"])
    as_text = runner.invoke(app, args, env={"COLUMNS": "160"})
    unknown = runner.invoke(app, [*args[:-1], "Atlantis"])
    assert as_json.exit_code == 0, as_json.output
    france, germany = ids(service, "france", "germany")
    expected = service.explain(france, service.resolve_relation("borders").id, germany).to_dict()
    assert json.loads(as_json.stdout) == json.loads(json.dumps(expected))
    assert as_text.exit_code == 0, as_text.output
    for needle in ("Why (France, borders, Germany)?", "Branch contributions", "Germany borders France",
                   " 80% ", "France in Europe; Germany in Europe", "filtered 1 known answer: Spain (test",
                   "Nearest neighbours", "multimodal"):
        assert needle in as_text.output, needle
    assert unknown.exit_code == 2 and "Atlantis" in unknown.output


def test_the_neighbours_table_keeps_branches_and_cosines_whole_at_80_columns():
    """DBpedia-length names fold; at 80 columns the branch was cut to 'struct…' and every cosine to '0…'."""
    from types import SimpleNamespace as NS

    from rich.console import Console

    from imf_cli.explain_view import neighbours_table

    long = "List of nicknames of Prime Ministers of the United Kingdom"
    neighbour = NS(entity=NS(name=long), similarity=0.6543, answers=(NS(name="Honolulu"),) * 3, answer_count=5)
    explanation = NS(head=NS(name="Barack Obama"), tail=NS(name="San Francisco, California, United States"),
                     relation=NS(label="birthPlace"),
                     neighbours=[NS(branch=b, head=(neighbour,) * 2, tail=(neighbour,)) for b in ("structure", "multimodal")])
    console = Console(width=80, record=True)
    console.print(neighbours_table(explanation))
    text = console.export_text()
    assert max(map(len, text.splitlines())) <= 80
    assert "structure " in text and "multimodal " in text and "…" not in text
    assert text.count("0.65") == 6
    assert "Prime Ministers" in " ".join(text.split())


def test_the_neighbours_table_never_crops_a_character_at_narrow_widths():
    """At 50 columns rich kept the folding columns' minimum widths past the terminal's edge, and the
    console cropped each line: 'its industry facts' lost 'ry', 'Information' its 'n'."""
    from collections import Counter
    from types import SimpleNamespace as NS

    from rich.console import Console

    from imf_cli.explain_view import neighbours_table

    def neighbour(name, cos, *answers):
        return NS(entity=NS(name=name), similarity=cos, answers=tuple(NS(name=a) for a in answers), answer_count=len(answers))

    head = (neighbour("Associated Press", 0.74), neighbour("IBM", 0.70, "Information technology"))
    explanation = NS(head=NS(name="Xerox"), tail=NS(name="Xbox 360"), relation=NS(label="industry"),
                     neighbours=[NS(branch="structure", head=head, tail=(neighbour("PlayStation 3", 0.87),))])
    written = "branch of neighbour cos its industry facts structure Xerox Associated Press 0.74 — IBM 0.70 → " \
              "Information technology Xbox 360 PlayStation 3 0.87 —"
    for width in (36, 40, 50, 60, 80):
        console = Console(width=width, record=True)
        console.print(neighbours_table(explanation))
        shown = console.export_text()
        assert max(map(len, shown.splitlines())) <= width
        missing = Counter(written.replace(" ", "")) - Counter(shown.replace(" ", "").replace("\n", ""))
        assert not missing, (width, missing, shown)
        assert "structure" in shown and "0.74" in shown and "0.87" in shown


def test_the_contributions_table_never_cuts_a_figure():
    """At 44 columns and below the table cut every probability to '0.…' and the shares to '…'; now its bar
    narrows, then whole columns go, named in the caption."""
    from rich.console import Console

    from imf_cli.explain import BranchContribution
    from imf_cli.explain_view import contributions_table

    rows = tuple(
        BranchContribution(branch, weight, logit, probability, weight * probability, share)
        for branch, weight, logit, probability, share in (
            ("structure", 0.01, 0.11, 0.53, 0.02), ("text", 0.67, 0.08, 0.52, 0.68), ("multimodal", 0.32, -0.14, 0.47, 0.30))
    )
    seen = {}
    for width in (24, 30, 36, 44, 50, 80):
        console = Console(width=width, record=True)
        console.print(contributions_table(rows))
        text = console.export_text()
        assert "…" not in text and max(map(len, text.splitlines())) <= width, text
        for branch, share in (("structure", "2%"), ("text", "68%"), ("multimodal", "30%")):
            line = next(line for line in text.splitlines() if line.startswith(branch))
            assert line.rstrip().endswith(share), (width, line)
        seen[width] = text
    assert "-0.14" in seen[80] and "0.348" in seen[80] and "██" in seen[80] and "Left out" not in seen[80]
    assert "Left out for the terminal's width: logit" in " ".join(seen[30].split())


def test_a_one_branch_explanation_names_its_branch_and_has_no_fusion_table():
    from rich.console import Console

    from imf_cli.explain_view import explanation_renderable, pane_renderable
    from tui.fake_service import FakeService

    for branches, alone in ((("structure",), True), (("structure", "text"), False)):
        explanation = FakeService(branches=branches).explain(0, 0, 2)
        console = Console(width=100, record=True)
        console.print(explanation_renderable(explanation))
        console.print(pane_renderable(explanation))
        text = " ".join(console.export_text().split())
        assert ("Branch contributions" in text) != alone
        assert ("structure score" in text) == alone and ("fused" in text) != alone
        assert ("scored by the structure branch alone" in text) == alone


def test_no_rule_that_never_holds_in_train_is_shown_as_evidence(service):
    """A path whose rule has confidence 0 (no supporting pair in train) was listed as "0% … evidence"."""
    relation = service.resolve_relation("capital_of").id
    for head in ("france", "germany", "spain", "paris"):
        for tail in ("europe", "germany", "madrid"):
            explanation = service.explain(*ids(service, head), relation, *ids(service, tail))
            assert all(item.confidence > 0 and item.support > 0 for item in explanation.evidence)


def test_entities_without_a_branch_s_feature_are_no_neighbours_there(service):
    """Europe has no image: in the visual branch it and the other imageless entities share one stand-in
    vector, so they were listed as each other's neighbours at cosine 1.00, in topk's arbitrary order."""
    france, europe = ids(service, "france", "europe")
    explanation = service.explain(france, service.resolve_relation("in").id, europe)
    visual = next(group for group in explanation.neighbours if group.branch == "visual")
    mask = service.model.feature_mask("visual")
    assert visual.tail == () or list(visual.tail) == []  # Europe has no image
    assert visual.head and all(bool(mask[n.entity.id]) for n in visual.head)
    structure = next(group for group in explanation.neighbours if group.branch == "structure")
    assert len(structure.tail) == 3  # every entity has a structure vector
