"""The evidence rule, in code: is a difference between settings larger than the spread over seeds?

A claim that one setting beats another is decided on valid, over at least 3 seeds, as mean ± sd, and a
gain smaller than the seed spread is no gain. ``imf runs compare --by-seed`` and ``imf ablate`` word
their verdicts with :func:`verdict`.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

#: Fewer seeds than this and a verdict says so.
MIN_SEEDS = 3


@dataclass(frozen=True)
class Stat:
    """A mean ± sample standard deviation over ``n`` seeds (sd None for one: a spread needs two)."""

    mean: float
    sd: float | None
    n: int

    @classmethod
    def of(cls, values: list[float]) -> "Stat | None":
        values = [v for v in values if v is not None and math.isfinite(v)]
        if not values:
            return None
        return cls(statistics.fmean(values), sample_sd(values), len(values))

    def to_dict(self) -> dict:
        return {"mean": self.mean, "sd": self.sd, "n": self.n}


def sample_sd(values: list[float]) -> float | None:
    """The sample standard deviation, or None for fewer than two values (one seed has no spread; 0 read
    as one that was measured)."""
    return statistics.stdev(values) if len(values) > 1 else None


def verdict(a: tuple[str, Stat], b: tuple[str, Stat], *, what: str, decimals: int = 4) -> str:
    """One sentence comparing ``b`` with ``a`` (each ``(label, stat)``): the difference of the means, and
    whether it exceeds the larger of the two sds; a side with fewer than :data:`MIN_SEEDS` seeds is named.

    ``what`` names the figure (``"best valid MRR (fused)"``). The difference is ``b − a``, signed.
    """
    (a_label, a_stat), (b_label, b_stat) = a, b
    gap = b_stat.mean - a_stat.mean
    text = (
        f"{what}: {b_label} {b_stat.mean:.{decimals}f} against {a_label} {a_stat.mean:.{decimals}f}, "
        f"a difference of {gap:+.{decimals}f}"
    )
    single = [label for label, stat in (a, b) if stat.n < 2]
    if single:
        verb = "has" if len(single) == 1 else "have"
        return text + f"; {' and '.join(single)} {verb} one seed: no seed spread to weigh it against"
    spread = max(a_stat.sd, b_stat.sd)
    if abs(gap) <= spread:
        text += f"; not more than the larger seed sd ({spread:.{decimals}f}): no difference shown"
    else:
        text += f"; more than the larger seed sd ({spread:.{decimals}f})"
    few = [label for label, stat in (a, b) if stat.n < MIN_SEEDS]
    if few:
        text += f"; {' and '.join(few)} {'has' if len(few) == 1 else 'have'} fewer than {MIN_SEEDS} seeds"
    return text
