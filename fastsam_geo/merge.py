"""Seam merging: each object once and whole, however the tiles cut it.

Rule (see ``Tile.core``): every raster pixel is owned by exactly one tile, the one whose
core contains it. A mask well inside its tile's core (``margin`` pixels clear of every
inner core boundary) is final at once. Any other mask becomes a *candidate*: its *piece*
is the part inside its own tile's core. Candidates of neighbouring tiles are matched where
both tiles see the same pixels (their overlap; the touching pixel strips when the overlap is
zero): greedy one-to-one by IoU there, at least ``match_iou``. Matched candidates form one
group (union-find, so an object spanning many tiles chains through all of them), and a
group's object is the union of its members' pieces. Because cores are disjoint and
adjacent, the pieces of an object cut by a seam fit together without gap or double count,
and a duplicate seen whole in two tiles keeps only the owner's half of each view.

A group is emitted as soon as every tile touching its bounding box has been added, so the
merger holds only candidates near unfinished tiles: about one row of tiles when tiles
arrive row by row, whatever the raster's area. Tiles may arrive in any order.

Candidates whose pieces add up to less than ``min_piece_fraction`` of their largest view
are dropped: they are slivers of an object another tile owns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .masks import Box, crop_window, intersect
from .tiling import TileGrid
from .types import Instances, MergedObject, Tile


@dataclass
class _Candidate:
    tile: int
    index: int  # instance index within its tile
    box: Box  # raster pixels
    bits: np.ndarray  # the crop, bit-packed along rows (np.packbits axis 1): 8x less held memory
    width: int
    score: float
    area: int
    piece_box: Box | None  # box ∩ own tile core
    piece_area: int


class SeamMerger:
    """Streams per-tile :class:`Instances` in, whole :class:`MergedObject` s out.

    >>> merger = SeamMerger(grid)
    >>> for tile, inst in results:            # any order
    ...     for obj in merger.add(tile, inst):
    ...         use(obj)
    >>> for obj in merger.flush():             # after the last tile
    ...     use(obj)
    """

    def __init__(self, grid: TileGrid, *, match_iou: float = 0.5, margin: int | None = None,
                 min_piece_fraction: float = 0.2):
        self.grid = grid
        self.match_iou = match_iou
        self.margin = max(2, grid.overlap // 8) if margin is None else margin
        self.min_piece_fraction = min_piece_fraction
        self._cands: dict[int, _Candidate] = {}
        self._parent: dict[int, int] = {}
        self._members: dict[int, list[int]] = {}  # root -> candidate ids
        self._gbox: dict[int, Box] = {}  # root -> union of member boxes
        self._by_tile: dict[int, set[int]] = {}
        self._waiting: dict[int, set[int]] = {}  # tile index -> group ids waiting on it
        self._processed: set[int] = set()
        self._next = 0
        self._crops: dict[int, np.ndarray] = {}  # unpacked crops of the candidates one add() uses

    @property
    def pending(self) -> int:
        """Candidates held, waiting for neighbouring tiles."""
        return len(self._cands)

    def add(self, tile: Tile, inst: Instances) -> list[MergedObject]:
        """Add one tile's instances (tile pixels); return the objects that are now final."""
        ti = self.grid.index(tile)
        if ti in self._processed:
            raise ValueError(f"tile {tile.row},{tile.col} was already added")
        out: list[MergedObject] = []
        inner = self._inner_core(tile)
        new: list[int] = []
        for k, ((x0, y0, x1, y1), crop, score) in enumerate(zip(inst.boxes.tolist(), inst.crops,
                                                                 inst.scores.tolist())):
            box = (x0 + tile.x, y0 + tile.y, x1 + tile.x, y1 + tile.y)
            if _inside(box, inner):
                out.append(MergedObject(box, crop, float(score), 1, ((ti, k, int(crop.sum())),)))
                continue
            pbox = intersect(box, tile.core)
            parea = int(crop_window(crop, box, pbox).sum()) if pbox else 0
            cid = self._next
            self._next += 1
            self._cands[cid] = _Candidate(ti, k, box, np.packbits(crop, axis=1), crop.shape[1], float(score),
                                          int(np.count_nonzero(crop)), pbox, parea)
            self._crops[cid] = crop
            self._parent[cid] = cid
            self._members[cid] = [cid]
            self._gbox[cid] = box
            new.append(cid)

        for nb in self.grid.neighbours(tile):
            ni = self.grid.index(nb)
            if ni in self._processed and self._by_tile.get(ni):
                self._match(new, tile, list(self._by_tile[ni]), nb)

        self._processed.add(ti)
        if new:
            self._by_tile[ti] = set(new)
        check = {self._find(c) for c in new}
        check |= {self._find(g) for g in self._waiting.pop(ti, ()) if g in self._parent}
        for root in check:
            self._check(root, out)
        self._crops.clear()
        return out

    def awaited(self, regions: list[Box] | None = None) -> set[int]:
        """Indexes of unprocessed tiles that held groups wait on (to finish them whole).

        With ``regions`` (raster-pixel boxes), only groups whose box touches one of them
        count: the tiles needed to complete the objects in the regions of interest.
        """
        out = set()
        for ti, groups in self._waiting.items():
            if ti in self._processed:
                continue
            for g in groups:
                if g in self._parent:
                    root = self._find(g)
                    if root in self._gbox and (regions is None or any(intersect(self._gbox[root], r)
                                                                       for r in regions)):
                        out.add(ti)
                        break
        return out

    def flush(self) -> list[MergedObject]:
        """Emit every group still held (call once all tiles are added, or to cut a run short)."""
        out: list[MergedObject] = []
        for root in list(self._members):
            self._finalize(root, out)
            self._crops.clear()
        self._waiting.clear()
        return out

    # -- internals -------------------------------------------------------------------------

    def _inner_core(self, tile: Tile) -> Box:
        x0, y0, x1, y1 = tile.core
        m = self.margin
        return (x0 + m if x0 > 0 else x0, y0 + m if y0 > 0 else y0,
                x1 - m if x1 < self.grid.width else x1, y1 - m if y1 < self.grid.height else y1)

    def _match(self, new: list[int], tile: Tile, old: list[int], nb: Tile) -> None:
        """Join the candidates of two neighbours that are views of one object, where both see them.

        With overlap both tiles see the same window: greedy one-to-one by IoU, then *split
        views*: a candidate whose window part is covered by several disjoint masks of the other
        tile (each lying at least half inside it, together at IoU >= ``match_iou``: a ring or
        U shape the other tile sees as two wings) is joined with all of them. With zero overlap the
        tiles share no pixel and the windows are the strips either side of the seam: a mask
        continues across it when at least ``match_iou`` of the smaller strip touches the
        other (its shape may change right at the seam, so IoU would split it).

        Pairs are pruned before any pixel is touched (their boxes must meet inside the window,
        enough to allow a match), and pixels are counted on the boxes' intersection only, so
        hundreds of candidates per tile stay cheap.
        """
        wins = _match_windows(tile, nb)
        if wins is None:
            return
        wa, wb = wins
        dx, dy = wa[0] - wb[0], wa[1] - wb[1]  # frame of wb -> frame of wa (0 unless overlap is 0)
        a = self._in_window(new, wa, 0, 0)
        b = self._in_window(old, wb, dx, dy)
        if not a or not b:
            return
        ab = np.array([x[1] for x in a])
        bb = np.array([x[1] for x in b])
        aa = np.array([x[2] for x in a], dtype=float)
        ba = np.array([x[2] for x in b], dtype=float)
        ix0 = np.maximum(ab[:, None, 0], bb[None, :, 0])
        iy0 = np.maximum(ab[:, None, 1], bb[None, :, 1])
        ix1 = np.minimum(ab[:, None, 2], bb[None, :, 2])
        iy1 = np.minimum(ab[:, None, 3], bb[None, :, 3])
        box_inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
        inter: dict[tuple[int, int], int] = {}

        def count(i: int, j: int) -> int:  # pixels both see, on the boxes' intersection only
            if (i, j) not in inter:
                ca, cb = self._cands[a[i][0]], self._cands[b[j][0]]
                x0, y0, x1, y1 = int(ix0[i, j]), int(iy0[i, j]), int(ix1[i, j]), int(iy1[i, j])
                ma = self._crop(a[i][0])[y0 - ca.box[1]:y1 - ca.box[1], x0 - ca.box[0]:x1 - ca.box[0]]
                mb = self._crop(b[j][0])[y0 - dy - cb.box[1]:y1 - dy - cb.box[1],
                                         x0 - dx - cb.box[0]:x1 - dx - cb.box[0]]
                inter[(i, j)] = int(np.count_nonzero(ma & mb))
            return inter[(i, j)]

        if wa != wb:  # zero overlap: continuity across the seam
            smaller = np.minimum(aa[:, None], ba[None, :])
            for i, j in zip(*np.nonzero(box_inter >= self.match_iou * smaller)):
                if count(i, j) >= self.match_iou * smaller[i, j]:
                    self._union(a[i][0], b[j][0])
            return
        # one-to-one: only pairs whose areas allow the IoU
        bound = np.minimum(aa[:, None], ba[None, :]) / np.maximum(aa[:, None], ba[None, :])
        pairs = []
        for i, j in zip(*np.nonzero((box_inter > 0) & (bound >= self.match_iou))):
            n = count(i, j)
            if n:
                pairs.append((n / (aa[i] + ba[j] - n), i, j))
        partner_a: dict[int, int] = {}
        partner_b: dict[int, int] = {}
        for iou, i, j in sorted(pairs, reverse=True):
            if iou >= self.match_iou and i not in partner_a and j not in partner_b:
                partner_a[i], partner_b[j] = j, i
                self._union(a[i][0], b[j][0])
        # split views: unmatched masks lying inside a mask of the other tile (their boxes within
        # its box, 2 px of slack; at least half their pixels inside it)
        un_a = np.ones(len(a), bool)
        un_a[list(partner_a)] = False
        un_b = np.ones(len(b), bool)
        un_b[list(partner_b)] = False
        b_in_a = _box_within(bb[None, :], ab[:, None], 2) & un_b[None, :]
        a_in_b = _box_within(ab[:, None], bb[None, :], 2) & un_a[:, None]
        inside: dict[int, list[int]] = {}  # a whole's candidate id -> those of the other tile's masks inside it
        for i, j in zip(*np.nonzero(b_in_a)):
            if count(i, j) >= 0.5 * ba[j]:
                inside.setdefault(a[i][0], []).append(b[j][0])
        for i, j in zip(*np.nonzero(a_in_b)):
            if count(i, j) >= 0.5 * aa[i]:
                inside.setdefault(b[j][0], []).append(a[i][0])
        for i, j in partner_a.items():  # a one-to-one partner inside the whole is one of its pieces too
            if count(i, j) >= 0.5 * ba[j]:
                inside.setdefault(a[i][0], []).append(b[j][0])
            if count(i, j) >= 0.5 * aa[i]:
                inside.setdefault(b[j][0], []).append(a[i][0])
        for whole, pieces in inside.items():
            if len(pieces) > 1 and self._union_iou(whole, pieces, wa) >= self.match_iou:
                for piece in pieces:
                    self._union(whole, piece)

    def _union_iou(self, c: int, others: list[int], win: Box) -> float:
        """IoU, within ``win``, of candidate ``c`` with the union of ``others``; 0 when ``others``
        overlap each other (nested masks, such as an object and its parts, are not a split view)."""
        boxes = [self._cands[o].box for o in [c, *others]]
        sub = intersect((min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes),
                         max(b[3] for b in boxes)), win)
        if sub is None:
            return 0.0
        x = self._window_mask(c, sub)
        u = np.zeros_like(x)
        total = 0
        for o in others:
            m = self._window_mask(o, sub)
            total += np.count_nonzero(m)
            u |= m
        if np.count_nonzero(u) < total:
            return 0.0
        union = np.count_nonzero(x | u)
        return np.count_nonzero(x & u) / union if union else 0.0

    def _window_mask(self, c: int, win: Box) -> np.ndarray:
        cand = self._cands[c]
        return crop_window(self._crop(c), cand.box, win)

    def _crop(self, c: int) -> np.ndarray:
        crop = self._crops.get(c)
        if crop is None:
            cand = self._cands[c]
            crop = self._crops[c] = np.unpackbits(cand.bits, axis=1, count=cand.width).view(bool)
        return crop

    def _in_window(self, ids: list[int], win: Box, dx: int, dy: int) -> list[tuple[int, Box, int]]:
        """(id, box within ``win`` shifted by (dx, dy), pixels within ``win``) of candidates there."""
        out = []
        for c in ids:
            cand = self._cands[c]
            ib = intersect(cand.box, win)
            if ib is None:
                continue
            x0, y0 = cand.box[:2]
            n = int(np.count_nonzero(self._crop(c)[ib[1] - y0:ib[3] - y0, ib[0] - x0:ib[2] - x0]))
            if n:
                out.append((c, (ib[0] + dx, ib[1] + dy, ib[2] + dx, ib[3] + dy), n))
        return out

    def _find(self, c: int) -> int:
        root = c
        while self._parent[root] != root:
            root = self._parent[root]
        while self._parent[c] != root:
            self._parent[c], c = root, self._parent[c]
        return root

    def _union(self, a: int, b: int) -> None:
        ra, rb = self._find(a), self._find(b)
        if ra == rb:
            return
        if len(self._members[ra]) < len(self._members[rb]):
            ra, rb = rb, ra
        self._parent[rb] = ra
        self._members[ra].extend(self._members.pop(rb))
        self._gbox[ra] = _union_box(self._gbox[ra], self._gbox.pop(rb))

    def _check(self, root: int, out: list[MergedObject]) -> None:
        x0, y0, x1, y1 = self._gbox[root]
        for t in self.grid.intersecting((x0 - 1, y0 - 1, x1 + 1, y1 + 1)):
            ti = self.grid.index(t)
            if ti not in self._processed:
                self._waiting.setdefault(ti, set()).add(root)
                return
        self._finalize(root, out)

    def _finalize(self, root: int, out: list[MergedObject]) -> None:
        ids = self._members.pop(root)
        self._gbox.pop(root)
        crops = {c: self._crop(c) for c in ids if self._cands[c].piece_area > 0}
        cands = [self._cands.pop(c) for c in ids]
        for c, cand in zip(ids, cands):
            del self._parent[c]
            tile_set = self._by_tile[cand.tile]
            tile_set.discard(c)
            if not tile_set:
                del self._by_tile[cand.tile]
        pieces = [(c, crops[i]) for i, c in zip(ids, cands) if c.piece_area > 0]
        total = sum(c.piece_area for c, _ in pieces)
        if total == 0 or total < self.min_piece_fraction * max(c.area for c in cands):
            return
        box = pieces[0][0].piece_box
        for c, _ in pieces[1:]:
            box = _union_box(box, c.piece_box)
        mask = np.zeros((box[3] - box[1], box[2] - box[0]), dtype=bool)
        for c, crop in pieces:
            px0, py0, px1, py1 = c.piece_box
            mask[py0 - box[1]:py1 - box[1], px0 - box[0]:px1 - box[0]] |= crop_window(crop, c.box, c.piece_box)
        score = sum(c.score * c.piece_area for c, _ in pieces) / total
        out.append(MergedObject(box, mask, float(score), len({c.tile for c, _ in pieces}),
                                tuple((c.tile, c.index, c.piece_area) for c, _ in pieces)))


def _inside(box: Box, outer: Box) -> bool:
    return box[0] >= outer[0] and box[1] >= outer[1] and box[2] <= outer[2] and box[3] <= outer[3]


def _box_within(inner: np.ndarray, outer: np.ndarray, slack: int) -> np.ndarray:
    """Whether boxes ``inner`` lie within ``outer`` (broadcast ``(..., 4)`` arrays), give or take ``slack`` px."""
    return ((inner[..., 0] >= outer[..., 0] - slack) & (inner[..., 1] >= outer[..., 1] - slack)
            & (inner[..., 2] <= outer[..., 2] + slack) & (inner[..., 3] <= outer[..., 3] + slack))


def _union_box(a: Box, b: Box) -> Box:
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def _match_windows(a: Tile, b: Tile) -> tuple[Box, Box] | None:
    """Where tiles ``a`` and ``b`` see the same object: (window in a, window in b), raster px.

    With overlap this is their common window, identical for both. With zero overlap it is
    the one-pixel strips on either side of a shared edge (none for corner neighbours).
    """
    common = intersect(a.box, b.box)
    if common is not None:
        return common, common
    ax0, ay0, ax1, ay1 = a.box
    bx0, by0, bx1, by1 = b.box
    if a.row == b.row:  # side by side
        y0, y1 = max(ay0, by0), min(ay1, by1)
        if bx0 == ax1:
            return (ax1 - 1, y0, ax1, y1), (bx0, y0, bx0 + 1, y1)
        if ax0 == bx1:
            return (ax0, y0, ax0 + 1, y1), (bx1 - 1, y0, bx1, y1)
    elif a.col == b.col:  # one above the other
        x0, x1 = max(ax0, bx0), min(ax1, bx1)
        if by0 == ay1:
            return (x0, ay1 - 1, x1, ay1), (x0, by0, x1, by0 + 1)
        if ay0 == by1:
            return (x0, ay0, x1, ay0 + 1), (x0, by1 - 1, x1, by1)
    return None
