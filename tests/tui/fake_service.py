"""A deterministic stand-in for :class:`imf_cli.service.PredictionService`, for TUI tests and snapshots.

Twelve Countries-MM-like entities, four relations (and their inverses), four branches. Every score is
a fixed function of the ids, so the screens are the same on every run.
"""

from __future__ import annotations

import re
import time

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

    ``image`` is the image file of France (entity 0); ``delay`` seconds pass in every ``top_k`` whose
    query entity is in ``slow`` (all of them when ``slow`` is None).
    """

    dataset = "countries-fake"
    branch_names = BRANCHES

    def __init__(self, image: str | None = None, *, delay: float = 0.0, slow: set[int] | None = None):
        self.entities = [
            EntityInfo(i, key, name, description, image if i == 0 else None)
            for i, (key, name, description) in enumerate(ENTITIES)
        ]
        r = len(RELATIONS)
        self._relations = [RelationChoice(i, key, name) for i, (key, name) in enumerate(RELATIONS)]
        self._relations += [RelationChoice(i + r, key, name, inverse=True) for i, (key, name) in enumerate(RELATIONS)]
        self.known: dict[tuple[int, int, int], set[str]] = {}
        for h, rel, t, split in TRIPLES:
            self.known.setdefault((h, rel, t), set()).add(split)
        self.delay = delay
        self.slow = slow
        self.calls: list[tuple[int, int, int, bool]] = []

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
    @staticmethod
    def _logits(h: int, r: int, t: int, known: bool) -> dict[str, float]:
        signal = 3.0 if known else -1.0
        return {
            branch: round(signal + ((h * 7 + r * 13 + t * 29 + b * 17) % 23) / 23 * 5 - 2.5 - b * 0.4, 3)
            for b, branch in enumerate(BRANCHES)
        }

    def top_k(self, entity: int, relation: int, k: int = 10, *, include_known: bool = False) -> QueryResult:
        self.calls.append((entity, relation, k, include_known))
        if self.delay and (self.slow is None or entity in self.slow):
            time.sleep(self.delay)
        r = len(RELATIONS)
        base = relation % r
        weights = dict(zip(BRANCHES, WEIGHTS[base]))
        rows = []
        for candidate in self.entities:
            triple = (candidate.id, base, entity) if relation >= r else (entity, base, candidate.id)
            known = frozenset(self.known.get(triple, ()))
            logits = self._logits(*triple, bool(known))
            contributions = {b: weights[b] * logits[b] for b in BRANCHES}
            rows.append((sum(contributions.values()), candidate, logits, contributions, known))
        rows.sort(key=lambda row: (-row[0], row[1].id))
        hidden = 0
        if not include_known:
            hidden = sum(1 for row in rows if row[4])
            rows = [row for row in rows if not row[4]]
        predictions = [
            Prediction(rank, candidate, fused, logits, contributions, known)
            for rank, (fused, candidate, logits, contributions, known) in enumerate(rows[:k], start=1)
        ]
        return QueryResult(self.entities[entity], self._relations[relation], weights, predictions, hidden)

    def supporting_facts(self, head: int, tail: int, limit: int = 5) -> list[Fact]:
        train = [(h, r, t) for (h, r, t), splits in self.known.items() if "train" in splits]
        direct = [x for x in train if {x[0], x[2]} == {head, tail}]
        neighbours = {t for h, _, t in train if h == tail} | {h for h, _, t in train if t == tail}
        via = [x for x in train if x[0] == head and x[2] in neighbours and x not in direct]
        return [
            Fact(self.entities[h], self._relations[r], self.entities[t], "train")
            for h, r, t in (direct + via)[:limit]
        ]
