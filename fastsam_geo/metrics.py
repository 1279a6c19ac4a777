"""Footprint metrics: greedy one-to-one matching by IoU (the SpaceNet / solaris rule).

Pure functions over arrays of shapely geometries in one CRS. A prediction and a reference
polygon match when their IoU is at least the threshold; pairs are taken greedily by
decreasing IoU, each polygon used at most once. TP = matches, FP = unmatched predictions,
FN = unmatched references.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import shapely


@dataclass(frozen=True)
class MatchResult:
    """Counts and scores of one evaluation; ``pairs`` are ``(pred_index, gt_index, iou)``.

    How the reference was prepared: ``clipped`` (cut to the raster's valid footprint),
    ``out_of_extent`` (reference polygons dropped because no part of them lies on valid
    pixels), ``below_min_area`` (reference polygons dropped as too small to count),
    ``ref_without_area`` / ``pred_without_area`` (rows dropped because they hold no polygon:
    NULL or empty geometries, points, lines).
    """

    tp: int
    fp: int
    fn: int
    iou_threshold: float
    mean_iou: float
    pairs: tuple[tuple[int, int, float], ...] = ()
    clipped: bool = False
    out_of_extent: int = 0
    below_min_area: int = 0
    ref_without_area: int = 0
    pred_without_area: int = 0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("pairs")
        d.update(precision=self.precision, recall=self.recall, f1=self.f1)
        return d


def match(pred: np.ndarray, gt: np.ndarray, iou: float = 0.5) -> MatchResult:
    """Greedy one-to-one matching of polygons ``pred`` (N,) against ``gt`` (M,) at IoU >= ``iou``.

    Invalid geometries are repaired with ``make_valid`` first; empty ones never match.
    """
    if not 0 < iou <= 1:
        raise ValueError(f"IoU threshold must be in (0, 1], got {iou}")
    pred = shapely.make_valid(np.asarray(pred, dtype=object))
    gt = shapely.make_valid(np.asarray(gt, dtype=object))
    pairs = []
    if len(pred) and len(gt):
        tree = shapely.STRtree(gt)
        pi, gi = tree.query(pred, predicate="intersects")
        if len(pi):
            inter = shapely.area(shapely.intersection(pred[pi], gt[gi]))
            union = shapely.area(pred[pi]) + shapely.area(gt[gi]) - inter
            ious = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
            ok = ious >= iou - 1e-12
            cand = sorted(zip(ious[ok].tolist(), pi[ok].tolist(), gi[ok].tolist()), key=lambda c: -c[0])
            used_p, used_g = set(), set()
            for v, p, g in cand:
                if p not in used_p and g not in used_g:
                    used_p.add(p)
                    used_g.add(g)
                    pairs.append((p, g, v))
    tp = len(pairs)
    mean = float(np.mean([v for *_, v in pairs])) if pairs else 0.0
    return MatchResult(tp=tp, fp=len(pred) - tp, fn=len(gt) - tp, iou_threshold=iou, mean_iou=mean,
                       pairs=tuple(pairs))


def by_cell(result: MatchResult, pred_cell: list, gt_cell: list,
            gt_ignored: np.ndarray | None = None) -> dict:
    """Split a result's counts by cell (e.g. tile): ``pred_cell`` (N,) and ``gt_cell`` (M,) hold
    each polygon's cell key (hashable). A match counts in its reference's cell, an unmatched prediction
    in its own, a missed reference in its own; references flagged in ``gt_ignored`` (M,) bool,
    and predictions matched to them, count nowhere. Returns ``{cell: (tp, fp, fn, mean_iou)}``.
    """
    ignored = np.zeros(len(gt_cell), bool) if gt_ignored is None else np.asarray(gt_ignored, bool)
    out: dict = {}

    def add(cell, tp=0, fp=0, fn=0, iou=None):
        c = out.setdefault(cell, [0, 0, 0, []])
        c[0], c[1], c[2] = c[0] + tp, c[1] + fp, c[2] + fn
        if iou is not None:
            c[3].append(iou)

    matched_p, matched_g = set(), set()
    for p, g, v in result.pairs:
        matched_p.add(p)
        matched_g.add(g)
        if not ignored[g]:
            add(gt_cell[g], tp=1, iou=v)
    for p in range(len(pred_cell)):
        if p not in matched_p:
            add(pred_cell[p], fp=1)
    for g in range(len(gt_cell)):
        if g not in matched_g and not ignored[g]:
            add(gt_cell[g], fn=1)
    return {k: (tp, fp, fn, float(np.mean(v)) if v else 0.0) for k, (tp, fp, fn, v) in out.items()}
