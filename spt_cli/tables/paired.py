"""The reference method (`table.reference`, SPT by default) against each other row, paired
over seeds.

Per task and baseline: the per-seed difference of the test main metric (reference minus
baseline) over the seeds both have, its mean, the reference's wins / ties / losses, and the
two-sided exact sign test (binomial with p = 1/2, ties dropped). Seeds pair runs that saw the
same few-shot sample, so the paired difference removes the sample's share of the variance.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from dataclasses import dataclass

from spt_cli.tables.aggregate import GroupTable, Table

TIE = 1e-12  # equal up to float noise: the same number of correct test examples
ALL = "all"  # the pooled column: every task-seed pair of one baseline


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test: P(a split at least this uneven | no difference), ties
    already dropped. 3 wins 1 loss: 2 * (C(4,0) + C(4,1)) / 2^4 = 0.625."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(wins, losses) + 1)) / 2**n
    return min(1.0, 2 * tail)


def title(table: GroupTable) -> str:
    """`SPT vs baselines (paired over seeds)`."""
    return f"{str(table.reference).upper()} vs baselines (paired over seeds)"


@dataclass
class Paired:
    """The reference method minus one baseline on one task, per seed (unscaled)."""

    baseline: str
    task: str
    seeds: list[int]
    diffs: list[float]

    @property
    def wins(self) -> int:
        return sum(d > TIE for d in self.diffs)

    @property
    def ties(self) -> int:
        return sum(abs(d) <= TIE for d in self.diffs)

    @property
    def losses(self) -> int:
        return sum(d < -TIE for d in self.diffs)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.diffs)

    @property
    def p(self) -> float:
        return sign_test(self.wins, self.losses)


def compare(table: GroupTable) -> list[Paired]:
    """Every (baseline, task) with at least one seed that both it and the table's reference
    method completed, in the table's method and task order (none without a reference)."""
    target = table.reference
    if target is None or target not in table.methods:
        return []
    out: list[Paired] = []
    for baseline in (m for m in table.methods if m != target):
        for task in table.tasks:
            ours, theirs = table.cells.get((target, task)), table.cells.get((baseline, task))
            if ours is None or theirs is None:
                continue
            seeds = sorted(set(ours.per_seed) & set(theirs.per_seed))
            if seeds:
                diffs = [ours.per_seed[s] - theirs.per_seed[s] for s in seeds]
                out.append(Paired(baseline, task, seeds, diffs))
    return out


def pooled(pairs: list[Paired]) -> list[Paired]:
    """Per baseline, every task-seed pair of `pairs` as one sample (task ``ALL``): with a few
    seeds no single cell can be significant, but a row's pairs together can."""
    out: list[Paired] = []
    for baseline in dict.fromkeys(p.baseline for p in pairs):
        mine = [p for p in pairs if p.baseline == baseline]
        out.append(Paired(baseline, ALL, [s for p in mine for s in p.seeds],
                          [d for p in mine for d in p.diffs]))  # fmt: skip
    return out


def format_p(p: float) -> str:
    """Three significant digits: 0.625, 0.0625, 1 (sign-test p-values are short fractions)."""
    return f"{p:.3g}"


def cell_text(pair: Paired) -> str:
    """`+2.1 (4-0-1, p=0.375)`: mean difference x100, wins-ties-losses, sign-test p."""
    return f"{100 * pair.mean:+.1f} ({pair.wins}-{pair.ties}-{pair.losses}, p={format_p(pair.p)})"


def reading(pairs: list[Paired]) -> str:
    """What the p-values can and cannot show with this many seeds."""
    n = max(len(p.seeds) for p in pairs)
    best = sign_test(n, 0)
    if best > 0.05:
        return (
            f"With {n} seeds the smallest possible two-sided sign-test p is {format_p(best)} "
            f"({n}-0-0), so no single cell can reach 0.05; read a row as a whole."
        )
    wins = min(k for k in range((n + 1) // 2, n + 1) if sign_test(k, n - k) < 0.05)
    return (
        f"With {n} seeds a cell reaches p < 0.05 only at {wins}-0-{n - wins} or better "
        "(or as lopsided the other way)."
    )


def notes(table: GroupTable) -> list[str]:
    pairs = compare(table)
    if not pairs:
        return []
    return [
        f"Cells: mean over seeds of {table.reference} minus the baseline (test main metric x100), "
        f"on the seeds both have; {table.reference}'s wins-ties-losses; p: two-sided exact sign "
        "test, ties dropped.",
        reading(pairs),
        f"{ALL.capitalize()}: every task-seed pair of the row pooled (mean of the pairs, "
        "wins-ties-losses, sign test); tasks where no method leaves chance add pairs that are "
        "noise, which pulls p towards 1.",
    ]


PAIRED_FIELDS = (
    "model", "shots", "task", "metric", "method", "baseline", "n", "seeds", "mean_diff",
    "wins", "ties", "losses", "p_sign", "diffs",
)  # fmt: skip


def to_paired_csv(result: Table) -> str:
    """One row per (task, baseline): unscaled differences, full precision."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(PAIRED_FIELDS)
    for table in result.groups:
        pairs = compare(table)
        for pair in pairs + pooled(pairs):
            writer.writerow(
                [table.model or "", "" if table.shots is None else table.shots, pair.task,
                 table.metrics.get(pair.task, ""), table.reference, pair.baseline, len(pair.seeds),
                 " ".join(map(str, pair.seeds)), repr(pair.mean), pair.wins, pair.ties,
                 pair.losses, repr(pair.p), " ".join(repr(d) for d in pair.diffs)]
            )  # fmt: skip
    return out.getvalue()
