"""Does the model's yes/no add anything to the evidence prior? Measured on bench/data.

    python bench/calibrate.py

For every task candidate of every labelled document: the evidence prior (log-odds), the
model's yes-minus-no score, and whether a gold task matches it. Prints the ranking quality
(AUC) of the prior alone, the model alone (raw and centred per document) and their best
logistic blend under leave-one-document-out cross-validation, so ``Tuning`` is set from
numbers, not hope.
"""

from __future__ import annotations

import asyncio
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.quality import DATA, load_docs  # noqa: E402
from bench.quality_gold import load_gold, similarity  # noqa: E402
from sidecar.extractors.candidates import find_candidates  # noqa: E402
from sidecar.extractors.extractive import _context  # noqa: E402
from sidecar.extractors.features import task_evidence  # noqa: E402
from sidecar.extractors.judge import ModelJudge  # noqa: E402
from sidecar.extractors.local import LocalExtractor  # noqa: E402
from sidecar.paths import Paths  # noqa: E402
from sidecar.settings import Config  # noqa: E402

Row = tuple[int, float, float, int]  # doc index, prior, model, label


def auc(scores: list[float], labels: list[int]) -> float:
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    if not pos or not neg:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def fit(rows: list[Row], steps: int = 3000, lr: float = 0.05) -> tuple[float, float, float]:
    """Logistic regression y ~ a*prior + b*model + c by gradient descent (tiny data)."""
    a, b, c = 1.0, 0.0, 0.0
    for _ in range(steps):
        ga = gb = gc = 0.0
        for _, prior, model, y in rows:
            z = max(-30.0, min(30.0, a * prior + b * model + c))
            err = 1 / (1 + math.exp(-z)) - y
            ga, gb, gc = ga + err * prior, gb + err * model, gc + err
        n = len(rows)
        a, b, c = a - lr * ga / n, b - lr * gb / n, c - lr * gc / n
    return a, b, c


async def collect() -> list[Row]:
    config = Config.load({})
    engine = LocalExtractor.from_config(config, Paths.from_config(config))
    judge = ModelJudge(engine.runtime)
    rows: list[Row] = []
    docs = load_docs(DATA, load_gold(DATA / "gold.json"))
    for i, doc in enumerate(docs):
        cands = find_candidates(doc.text)
        if not cands:
            continue
        model = await judge("tasks", cands, _context(doc.text))
        golds = [[t.title, *t.aliases] for t in doc.gold.tasks]
        for c, m in zip(cands, model, strict=True):
            label = int(any(similarity([c.text], g) >= 0.6 for g in golds))
            rows.append((i, task_evidence(c).logit, m, label))
    await engine.close()
    return rows


def centred(rows: list[Row]) -> list[Row]:
    by_doc: dict[int, list[float]] = {}
    for d, _, m, _ in rows:
        by_doc.setdefault(d, []).append(m)
    mean = {d: sum(v) / len(v) for d, v in by_doc.items()}
    return [(d, p, m - mean[d], y) for d, p, m, y in rows]


def cross_validated_auc(rows: list[Row]) -> float:
    scores, labels = [], []
    for d in sorted({r[0] for r in rows}):
        train = [r for r in rows if r[0] != d]
        a, b, c = fit(train, steps=600)
        for _, p, m, y in (r for r in rows if r[0] == d):
            scores.append(a * p + b * m + c)
            labels.append(y)
    return auc(scores, labels)


def main() -> None:
    rows = asyncio.run(collect())
    labels = [r[3] for r in rows]
    print(f"{len(rows)} candidates, {sum(labels)} match a gold task")
    print(f"AUC prior alone:            {auc([r[1] for r in rows], labels):.3f}")
    print(f"AUC model alone (raw):      {auc([r[2] for r in rows], labels):.3f}")
    band = [r for r in rows if -2.5 <= r[1] <= 3.0]  # where Tuning asks the model
    bl = [r[3] for r in band]
    print(f"in the ask band ({len(band)} candidates, {sum(bl)} gold): prior AUC "
          f"{auc([r[1] for r in band], bl):.3f}, model AUC {auc([r[2] for r in band], bl):.3f}")
    cen = centred(rows)
    print(f"AUC model alone (centred):  {auc([r[2] for r in cen], labels):.3f}")
    a, b, c = fit(rows)
    print(f"blend raw:     prior*{a:.2f} + model*{b:.2f} + {c:.2f}   "
          f"CV AUC {cross_validated_auc(rows):.3f}")
    a, b, c = fit(cen)
    print(f"blend centred: prior*{a:.2f} + model*{b:.2f} + {c:.2f}   "
          f"CV AUC {cross_validated_auc(cen):.3f}")


if __name__ == "__main__":
    main()
