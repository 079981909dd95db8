"""A deterministic stand-in for :class:`imf_cli.service.PredictionService`, for TUI tests and snapshots.

Twelve Countries-MM-like entities, four relations (and their inverses), four branches. Every score is
a fixed function of the ids, so the screens are the same on every run. With ``added=True`` a
thirteenth entity, Newland, stands for one added after training: no triples, no structure score.
With ``branches``, the run has only those branches (a one-branch run: ``branches=("structure",)``).
"""

from __future__ import annotations

import re
import threading

from imf_cli.explain import BranchNeighbours, Evidence, Explanation, FilteredAnswer, Neighbour
from imf_cli.explain import contributions_of
from imf_cli.scoring import sigmoid
from imf_cli.service import (
    AmbiguousNameError,
    EntityInfo,
    Fact,
    Prediction,
    QueryResult,
    RelationChoice,
    split_relation_text,
)
from kgdata.errors import ImfError

BRANCHES = ("structure", "visual", "text", "multimodal")

ENTITIES = [
    ("country:FRA", "France", "A republic in Western Europe; its capital is Paris. Founding member of the EU."),
    ("country:DEU", "Germany", "A federal republic in Central Europe, the most populous member of the EU."),
    ("country:ESP", "Spain", "A kingdom on the Iberian Peninsula in Southern Europe."),
    ("country:ITA", "Italy", "A republic on a peninsula reaching into the Mediterranean Sea."),
    ("country:BEL", "Belgium", "A federal kingdom in Western Europe; Brussels hosts EU institutions."),
    ("country:CHE", "Switzerland", "A landlocked federal republic in the Alps; not an EU member."),
    ("country:PRT", "Portugal", "A republic in the west of the Iberian Peninsula."),
    ("country:AND", "Andorra", "A small principality in the Pyrenees between France and Spain."),
    ("subregion:western_europe", "Western Europe", "A subregion of Europe."),
    ("subregion:southern_europe", "Southern Europe", "A subregion of Europe."),
    ("region:europe", "Europe", None),
    ("currency:EUR", "Euro", "The currency of the euro area."),
]
RELATIONS = [
    ("shares_border_with", "shares border with"),
    ("located_in_subregion", "located in subregion"),
    ("part_of_region", "part of region"),
    ("uses_currency", "uses currency"),
]
# Per relation: the decision-fusion weights of structure, visual, text, multimodal.
WEIGHTS = [
    (0.46, 0.08, 0.16, 0.30),
    (0.22, 0.12, 0.41, 0.25),
    (0.30, 0.05, 0.35, 0.30),
    (0.35, 0.20, 0.15, 0.30),
]


def _border(a: int, b: int, split: str = "train") -> list[tuple[int, int, int, str]]:
    return [(a, 0, b, split), (b, 0, a, "train")]


TRIPLES: list[tuple[int, int, int, str]] = [
    *_border(0, 1), *_border(0, 2, "valid"), *_border(0, 3), *_border(0, 4), *_border(0, 5, "test"),
    *_border(0, 7), *_border(1, 4), *_border(1, 5), *_border(2, 6), *_border(2, 7), *_border(3, 5),
    *[(c, 1, 8, "train") for c in (0, 1, 4, 5)],
    *[(c, 1, 9, "train") for c in (2, 3, 6, 7)],
    *[(c, 2, 10, "train") for c in range(8)],
    *[(c, 3, 11, "train") for c in (0, 1, 2, 3, 4, 6, 7)],
]


class FakeService:
    """Implements the :class:`imf_cli.service.Service` protocol from fixed tables.

    ``image`` is the image file of France (entity 0). With ``gate``, every ``top_k`` whose query entity
    is in ``slow`` (all of them when ``slow`` is None) waits for the event, so a test decides when it
    finishes, whatever the machine's load; ``finished`` lists the query entities whose ``top_k`` returned.
    """

    dataset = "countries-fake"

    def __init__(
        self,
        image: str | None = None,
        *,
        slow: set[int] | None = None,
        gate: threading.Event | None = None,
        added: bool = False,
        branches: tuple[str, ...] = BRANCHES,
    ):
        self.branch_names = tuple(branches)
        self.entities = [
            EntityInfo(i, key, name, description, image if i == 0 else None)
            for i, (key, name, description) in enumerate(ENTITIES)
        ]
        self.num_graph_entities = len(self.entities)
        if added:
            self.entities.append(
                EntityInfo(len(self.entities), "country:NEW", "Newland", "A new republic in Western Europe.", None, True)
            )
        r = len(RELATIONS)
        self._relations = [RelationChoice(i, key, name) for i, (key, name) in enumerate(RELATIONS)]
        self._relations += [RelationChoice(i + r, key, name, inverse=True) for i, (key, name) in enumerate(RELATIONS)]
        self.known: dict[tuple[int, int, int], set[str]] = {}
        for h, rel, t, split in TRIPLES:
            self.known.setdefault((h, rel, t), set()).add(split)
        self.slow = slow
        self.gate = gate
        self.calls: list[tuple[int, int, int, bool]] = []
        self.explained: list[tuple[int, int, int, bool]] = []  # (head, relation, tail, include_new)
        self.finished: list[int] = []

    # ---------------------------------------------------------------- lookups
    def entity(self, entity_id: int) -> EntityInfo:
        return self.entities[entity_id]

    def relations(self) -> list[RelationChoice]:
        return list(self._relations)

    def search_entities(self, text: str, limit: int = 10) -> list[EntityInfo]:
        words = re.findall(r"\w+", text.lower())
        if not words:
            return []

        def matches(field: str | None) -> bool:
            tokens = re.findall(r"\w+", (field or "").lower())
            return all(any(token.startswith(word) for token in tokens) for word in words)

        by_name = sorted(
            (e for e in self.entities if matches(f"{e.name} {e.key}")),
            key=lambda e: (e.name.lower() != text.strip().lower(), len(e.name), e.id),
        )
        by_text = [e for e in self.entities if e not in by_name and matches(f"{e.name} {e.description}")]
        return (by_name + by_text)[:limit]

    def resolve_entity(self, text: str) -> EntityInfo:
        for entity in self.entities:
            if text.strip().lower() in (entity.key.lower(), entity.name.lower()):
                return entity
        found = self.search_entities(text, limit=5)
        if len(found) == 1:
            return found[0]
        if found:
            names = "; ".join(f"{e.name} [{e.key}]" for e in found)
            raise AmbiguousNameError(f"{text!r} matches several entities: {names}", found)
        raise ImfError(f"no entity matches {text!r} in {self.dataset}")

    def resolve_relation(self, text: str, *, inverse: bool = False) -> RelationChoice:
        text, marked = split_relation_text(text)
        inverse = inverse or bool(marked)
        for relation in self._relations:
            if relation.inverse == inverse and text.lower() in (relation.key, relation.name):
                return relation
        raise ImfError(f"no relation matches {text!r} in {self.dataset}")

    # ---------------------------------------------------------------- scoring
    def _logits(self, h: int, r: int, t: int, known: bool) -> dict[str, float]:
        signal = 3.0 if known else -1.0
        return {
            branch: round(signal + ((h * 7 + r * 13 + t * 29 + b * 17) % 23) / 23 * 5 - 2.5 - b * 0.4, 3)
            for b, branch in enumerate(BRANCHES)
            if branch in self.branch_names
        }

    def _weights(self, relation: int) -> dict[str, float]:
        return {b: w for b, w in zip(BRANCHES, WEIGHTS[relation % len(RELATIONS)]) if b in self.branch_names}

    def is_added(self, entity_id: int) -> bool:
        return entity_id >= self.num_graph_entities

    def _rows(self, entity: int, relation: int, include_new: bool) -> list[tuple]:
        """Every candidate: (fused, entity, logits of the branches that score it, contributions, known)."""
        r = len(RELATIONS)
        base = relation % r
        weights = self._weights(relation)
        rows = []
        for candidate in self.entities:
            if self.is_added(candidate.id) and not include_new:
                continue
            triple = (candidate.id, base, entity) if relation >= r else (entity, base, candidate.id)
            known = frozenset(self.known.get(triple, ()))
            logits = self._logits(*triple, bool(known))
            if self.is_added(entity) or self.is_added(candidate.id):
                logits.pop("structure", None)  # an entity outside the graph has no structure vector
            total = sum(weights[b] for b in logits)
            contributions = {b: weights[b] / total * logits[b] for b in logits}
            rows.append((round(sum(contributions.values()), 6), candidate, logits, contributions, known))
        rows.sort(key=lambda row: (-row[0], row[1].id))
        return rows

    def top_k(
        self, entity: int, relation: int, k: int = 10, *, include_known: bool = False, include_new: bool = False
    ) -> QueryResult:
        self.calls.append((entity, relation, k, include_known))
        if self.gate is not None and (self.slow is None or entity in self.slow) and not self.gate.wait(timeout=30):
            raise TimeoutError("the test never opened the gate")
        weights = self._weights(relation)
        rows = self._rows(entity, relation, include_new)
        hidden = 0
        if not include_known:
            hidden = sum(1 for row in rows if row[4])
            rows = [row for row in rows if not row[4]]
        predictions = [
            Prediction(rank, candidate, fused, logits, contributions, known, in_graph=not self.is_added(candidate.id))
            for rank, (fused, candidate, logits, contributions, known) in enumerate(rows[:k], start=1)
        ]
        in_graph = not self.is_added(entity)
        if not in_graph:
            total = sum(w for b, w in weights.items() if b != "structure")
            weights = {b: w / total for b, w in weights.items() if b != "structure"}
        self.finished.append(entity)
        return QueryResult(
            self.entities[entity], self._relations[relation], weights, predictions, hidden, in_graph, include_new
        )

    def explain(self, head: int, relation: int, tail: int, *, include_new: bool = False) -> Explanation:
        """A fixed explanation from the same tables: contributions, rank, facts as evidence, neighbours by id.
        As the real one, it ranks an added tail among the graph's entities, or with ``include_new`` among
        every added entity too."""
        self.explained.append((head, relation, tail, include_new))
        weights = self._weights(relation)
        rows = [row for row in self._rows(head, relation, include_new=True)
                if include_new or not self.is_added(row[1].id) or row[1].id == tail]
        target = next(row for row in rows if row[1].id == tail)
        others = [row for row in rows if row[4] and row[1].id != tail]
        kept = [row for row in rows if row not in others]
        facts = self.supporting_facts(head, tail, limit=2)
        evidence = tuple(Evidence((fact,), (fact.relation,), 0.8 - 0.3 * i, 4 - i) for i, fact in enumerate(facts))
        neighbours = tuple(
            BranchNeighbours(
                branch,
                tuple(Neighbour(self.entities[(head + j + b) % 12], 0.9 - 0.1 * j, (), 0) for j in (1, 2, 3))
                if branch in target[2] or not self.is_added(head) else (),
                tuple(Neighbour(self.entities[(tail + j + b) % 12], 0.8 - 0.1 * j, (), 0) for j in (1, 2, 3)),
            )
            for b, branch in enumerate(BRANCHES)
            if branch in self.branch_names
        )
        return Explanation(
            head=self.entities[head], relation=self._relations[relation], tail=self.entities[tail],
            head_in_graph=not self.is_added(head), tail_in_graph=not self.is_added(tail),
            fused=target[0], probability=sigmoid(target[0]),
            contributions=contributions_of(weights, target[2]),
            rank=float(kept.index(target) + 1), raw_rank=float(rows.index(target) + 1), candidates=len(kept),
            added_candidates=sum(self.is_added(row[1].id) for row in kept) if include_new else 0,
            known=target[4],
            filtered=tuple(FilteredAnswer(row[1], row[4], row[0], row[0] > target[0]) for row in others[:3]),
            filtered_count=len(others), evidence=evidence, neighbours=neighbours,
        )

    def supporting_facts(self, head: int, tail: int, limit: int = 5) -> list[Fact]:
        train = [(h, r, t) for (h, r, t), splits in self.known.items() if "train" in splits]
        direct = [x for x in train if {x[0], x[2]} == {head, tail}]
        neighbours = {t for h, _, t in train if h == tail} | {h for h, _, t in train if t == tail}
        via = [x for x in train if x[0] == head and x[2] in neighbours and x not in direct]
        return [
            Fact(self.entities[h], self._relations[r], self.entities[t], "train")
            for h, r, t in (direct + via)[:limit]
        ]
