"""Seam merging: each object once and whole, however the tiles cut it and however their views differ.

Real networks disagree from tile to tile: the same roof comes out a pixel wider in one tile,
is missed in another, split in two in a third. So the rule is **a view that sees an object
whole wins** (SAM's automatic mask generator does the same across crops):

* A view (one instance mask of one tile) is *partial* when it touches an inner edge of its
  tile (within ``edge`` px; raster edges do not count): the tile sees only part of the object.
  Otherwise it is *whole*.
* A view that no other tile can see (its box clear of every other tile's window) is final at
  once. The others are held, and linked to the views of overlapping tiles that cover the same
  pixels; linked views form a *component*, resolved once every tile that could add to it has
  been added (tiles may arrive in any order; about one row of tiles is held when they arrive
  row by row).
* Resolving a component: whole views of one object seen by several tiles are de-duplicated:
  the view farthest from its tile's inner edges is kept (``prefer="edge"``; or the best
  scoring, ``prefer="score"``), except that a tile's view splitting into pieces an object
  another tile sees as one mask loses to that unsplit view. Partial views covered by a kept
  whole view are dropped. Only objects no tile saw whole (larger than a tile, or crossing a
  seam with too little overlap) are joined from their partial views (one-to-one by IoU where
  both tiles see the same pixels, split views, continuity across zero-overlap seams), as the
  union of those *full* views, never of pieces cut along a core line.

Views of different tiles are "the same object" when at least half of the smaller lies in the
other and their sizes agree (half the area, or boxes within a few pixels: a jittered small
object). Views of one tile never conflict here: nested or duplicate masks of one tile are the
network's own (see :func:`fastsam_geo.masks.suppress_duplicates`).
"""

from __future__ import annotations

import math

import numpy as np

from .masks import DEDUP_CONTAIN, DEDUP_IOU, Box, Regions, crop_window, intersect
from .tiling import TileGrid
from .types import Instances, MergedObject, Part, Tile
from .views import Relations, View, groups, grow, near, overlap, tight, union_box

EDGE = 8
"""A mask this close (px) to an inner tile edge is partial. Real masks of an object the tile
edge cuts often stop short of it: YOLOv8-seg builds masks from 4-px prototype cells, and the
bundled model's masks near inner edges on the OpenAerialMap mosaics pile up at 0-7 px from the
edge (74 at 0 px, 6-8 per px up to 4 px, 2-3 per px at 5-7 px, then the ~1 per px of objects
that really end there). Taking such a mask as whole kept the truncated view."""


class SeamMerger:
    """Streams per-tile :class:`Instances` in, whole :class:`MergedObject` s out.

    >>> merger = SeamMerger(grid)
    >>> for tile, inst in results:            # any order
    ...     for obj in merger.add(tile, inst):
    ...         use(obj)
    >>> for obj in merger.flush():             # after the last tile
    ...     use(obj)

    ``match_iou``: IoU (within the pixels both tiles see) for joining partial views of one
    object. ``edge``: a mask within this many px of an inner tile edge is partial (default
    :data:`EDGE`).
    ``prefer``: which of several whole views of an object is kept, ``"edge"`` (farthest from
    its tile's inner edges, the one with most context) or ``"score"``. ``nested``: objects may
    lie inside others (FastSAM's everything mode: a roof and its parts); without it (buildings)
    any view lying inside a larger view of another tile is taken as a piece of that object.
    """

    def __init__(self, grid: TileGrid, *, match_iou: float = 0.5, edge: int | None = None, prefer: str = "edge",
                 nested: bool = False):
        if prefer not in ("edge", "score"):
            raise ValueError(f"prefer must be 'edge' or 'score', got {prefer!r}")
        self.grid = grid
        self.match_iou = match_iou
        self.edge = EDGE if edge is None else edge
        self.prefer = prefer
        self.nested = nested
        self._views: dict[int, View] = {}
        self._links: dict[int, set[int]] = {}  # joins of partial views (one object, no tile saw whole)
        self._parent: dict[int, int] = {}
        self._members: dict[int, list[int]] = {}  # root -> view ids
        self._gbox: dict[int, Box] = {}  # root -> union of member boxes
        self._by_tile: dict[int, set[int]] = {}
        self._waiting: dict[int, set[int]] = {}  # tile index -> components waiting on it
        self._processed: set[int] = set()
        self._next = 0
        self._crops: dict[int, np.ndarray] = {}  # unpacked crops, during one add() or resolution

    @property
    def pending(self) -> int:
        """Views held, waiting for overlapping tiles."""
        return len(self._views)

    def add(self, tile: Tile, inst: Instances) -> list[MergedObject]:
        """Add one tile's instances (tile pixels); return the objects that are now final."""
        ti = self.grid.index(tile)
        if ti in self._processed:
            raise ValueError(f"tile {tile.row},{tile.col} was already added")
        others = [t for t in self.grid.intersecting(grow(tile.box, 1)) if t is not tile]
        inner = self._inner_edges(tile)
        nodata = inst.invalid
        out: list[MergedObject] = []
        new: list[int] = []
        for k, ((x0, y0, x1, y1), crop, score, quality) in enumerate(zip(inst.boxes.tolist(), inst.crops,
                                                                          inst.scores.tolist(),
                                                                          inst.qualities.tolist())):
            box = (x0 + tile.x, y0 + tile.y, x1 + tile.x, y1 + tile.y)
            holes = None
            if nodata is not None:
                holes = nodata[y0:y1, x0:x1]
                holes = holes if holes.any() else None
            if not any(intersect(grow(box, 1), o.box) for o in others):  # no other tile sees it
                out.append(MergedObject(box, ((box, crop),), float(score), 1, ((ti, k, int(crop.sum())),),
                                        () if holes is None else ((box, holes),), float(quality)))
                continue
            d = min((v for v, is_inner in zip((x0, y0, tile.width - x1, tile.height - y1), inner) if is_inner),
                    default=math.inf)
            vid = self._next
            self._next += 1
            self._views[vid] = View(ti, k, box, np.packbits(crop, axis=1), crop.shape[1], float(score),
                                     int(np.count_nonzero(crop)), d > self.edge, d,
                                     None if holes is None else np.packbits(holes, axis=1), float(quality))
            self._crops[vid] = crop
            self._links[vid] = set()
            self._parent[vid] = vid
            self._members[vid] = [vid]
            self._gbox[vid] = box
            new.append(vid)

        for other in others:
            oi = self.grid.index(other)
            if oi in self._processed and self._by_tile.get(oi):
                self._link(new, tile, list(self._by_tile[oi]), other)

        self._processed.add(ti)
        if new:
            self._by_tile[ti] = set(new)
        check = {self._find(v) for v in new}
        check |= {self._find(g) for g in self._waiting.pop(ti, ()) if g in self._parent}
        for root in check:
            self._check(root, out)
        self._crops.clear()
        return out

    def awaited(self, regions: Regions | list[Box] | None = None) -> set[int]:
        """Indexes of unprocessed tiles that held components wait on (to finish them whole).

        With ``regions`` (raster-pixel boxes), only components whose box touches one of them
        count: the tiles needed to complete the objects in the regions of interest.
        """
        if regions is not None and not isinstance(regions, Regions):
            regions = Regions(regions)
        out = set()
        for ti, waiting in self._waiting.items():
            if ti in self._processed:
                continue
            for g in waiting:
                if g in self._parent:
                    root = self._find(g)
                    if root in self._gbox and (regions is None or regions.touches(self._gbox[root])):
                        out.add(ti)
                        break
        return out

    def flush(self) -> list[MergedObject]:
        """Resolve every component still held (call once all tiles are added, or to cut a run short)."""
        out: list[MergedObject] = []
        for root in list(self._members):
            self._resolve(root, out)
            self._crops.clear()
        self._waiting.clear()
        return out

    # -- linking views of overlapping tiles -------------------------------------------------

    def _inner_edges(self, tile: Tile) -> tuple[bool, bool, bool, bool]:
        """Which of the tile's left, top, right, bottom edges lie inside the raster."""
        return (tile.x > 0, tile.y > 0, tile.x + tile.width < self.grid.width,
                tile.y + tile.height < self.grid.height)

    def _link(self, new: list[int], tile: Tile, old: list[int], other: Tile) -> None:
        """Link the views of two tiles that may show one object.

        With overlap both tiles see the same window. Views sharing at least half of the
        smaller one's pixels join one component (the resolution decides what they are);
        *joins* of partial views are recorded separately: greedy one-to-one by IoU within the
        window, then *split views* (a view whose window part is covered by several disjoint
        views of the other tile, each at least half inside it, together at IoU >=
        ``match_iou``: a ring or U the other tile sees as two wings). With zero overlap the
        tiles share no pixel and the windows are the strips either side of the seam: a view
        continues across it when at least ``match_iou`` of the smaller strip touches the other.

        Pairs are pruned by their boxes before any pixel is touched, and pixels are counted on
        the boxes' intersection only, so hundreds of views per tile stay cheap.
        """
        wins = _match_windows(tile, other)
        if wins is None:
            return
        wa, wb = wins
        if wa == wb:
            self._link_near(new, tile, old, other, wa)
        dx, dy = wa[0] - wb[0], wa[1] - wb[1]  # frame of wb -> frame of wa (0 unless overlap is 0)
        a = self._in_window(new, wa, 0, 0)
        b = self._in_window(old, wb, dx, dy)
        if not a or not b:
            return
        ab = np.array([x[1] for x in a])
        bb = np.array([x[1] for x in b])
        aa = np.array([x[2] for x in a], dtype=float)  # pixels in the window
        ba = np.array([x[2] for x in b], dtype=float)
        ix0 = np.maximum(ab[:, None, 0], bb[None, :, 0])
        iy0 = np.maximum(ab[:, None, 1], bb[None, :, 1])
        ix1 = np.minimum(ab[:, None, 2], bb[None, :, 2])
        iy1 = np.minimum(ab[:, None, 3], bb[None, :, 3])
        box_inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
        inter: dict[tuple[int, int], int] = {}

        def count(i: int, j: int) -> int:  # pixels both see, on the boxes' intersection only
            if box_inter[i, j] == 0:
                return 0
            if (i, j) not in inter:
                va, vb = self._views[a[i][0]], self._views[b[j][0]]
                x0, y0, x1, y1 = int(ix0[i, j]), int(iy0[i, j]), int(ix1[i, j]), int(iy1[i, j])
                ma = self._crop(a[i][0])[y0 - va.box[1]:y1 - va.box[1], x0 - va.box[0]:x1 - va.box[0]]
                mb = self._crop(b[j][0])[y0 - dy - vb.box[1]:y1 - dy - vb.box[1],
                                         x0 - dx - vb.box[0]:x1 - dx - vb.box[0]]
                inter[(i, j)] = int(np.count_nonzero(ma & mb))
            return inter[(i, j)]

        def join(i: int, j: int) -> None:
            self._links[a[i][0]].add(b[j][0])
            self._links[b[j][0]].add(a[i][0])
            self._union(a[i][0], b[j][0])

        if wa != wb:  # zero overlap: continuity across the seam
            smaller = np.minimum(aa[:, None], ba[None, :])
            for i, j in zip(*np.nonzero(box_inter >= self.match_iou * smaller)):
                if count(i, j) >= self.match_iou * smaller[i, j]:
                    join(i, j)
            return
        # what the resolution must weigh against each other: whole views of one object (or of a
        # piece of it); without nesting, any two views sharing DEDUP_CONTAIN of the smaller (the
        # resolution keeps one: buildings do not overlap)
        whole_a = np.array([self._views[x[0]].whole for x in a])
        whole_b = np.array([self._views[x[0]].whole for x in b])
        small = np.minimum(np.array([self._views[x[0]].area for x in a], float)[:, None],
                           np.array([self._views[x[0]].area for x in b], float)[None, :])
        need = 0.25 if self.nested else DEDUP_CONTAIN
        cand = box_inter >= need * small
        if self.nested:
            cand &= whole_a[:, None] & whole_b[None, :]
        for i, j in zip(*np.nonzero(cand)):
            if self._find(a[i][0]) != self._find(b[j][0]) and count(i, j) >= need * small[i, j]:
                self._union(a[i][0], b[j][0])
        # joins of partial views (the only links the resolution follows): one-to-one, by IoU
        # within the window; a thin object grown in one view and shrunk in the other (IoU 1/3
        # at 4 px wide) matches too: half of the smaller inside the other, boxes within a few
        # px. Only pairs whose areas or boxes allow a match are counted.
        part = ~whole_a[:, None] & ~whole_b[None, :]
        bound = np.minimum(aa[:, None], ba[None, :]) / np.maximum(aa[:, None], ba[None, :])
        close_ab = _close_matrix(ab, bb)
        pairs = []
        for i, j in zip(*np.nonzero(part & (box_inter > 0) & ((bound >= self.match_iou) | close_ab))):
            close = close_ab[i, j]
            n = count(i, j)
            iou = n / (aa[i] + ba[j] - n)
            if iou >= self.match_iou or (close and n >= 0.5 * min(aa[i], ba[j])):
                pairs.append((iou, i, j))
        partner_a: dict[int, int] = {}
        partner_b: dict[int, int] = {}
        for _, i, j in sorted(pairs, reverse=True):
            if i not in partner_a and j not in partner_b:
                partner_a[i], partner_b[j] = j, i
                join(i, j)
        # split views: partial views lying inside a partial view of the other tile (their boxes
        # within its box, 2 px of slack; at least half their pixels inside it)
        inside: dict[int, list[int]] = {}  # a container's index in a (>= 0) or ~index in b -> pieces
        for i, j in zip(*np.nonzero(part & _box_within(bb[None, :], ab[:, None], 2))):
            if count(i, j) >= 0.5 * ba[j]:
                inside.setdefault(i, []).append(j)
        for i, j in zip(*np.nonzero(part & _box_within(ab[:, None], bb[None, :], 2))):
            if count(i, j) >= 0.5 * aa[i]:
                inside.setdefault(~j, []).append(i)
        for key, pieces in inside.items():
            if len(pieces) < 2:
                continue
            if key >= 0:
                whole, ids = a[key][0], [b[j][0] for j in pieces]
            else:
                whole, ids = b[~key][0], [a[i][0] for i in pieces]
            if self._union_iou(whole, ids, wa) >= self.match_iou:
                for key2 in pieces:
                    join(key, key2) if key >= 0 else join(key2, ~key)

    def _link_near(self, new: list[int], tile: Tile, old: list[int], other: Tile, win: Box) -> None:
        """Link partial views to whole views of the other tile that show their object: the
        partial view's pixels within 1 px of the whole view, in a window 1 px wider than the
        shared one (a one-row sliver of a roof grown in one tile can miss the roof shrunk in the
        other, just outside the shared window). With ``nested`` objects, a whole view much smaller
        than the partial view's part there is not linked: a small object inside a large one seen
        in part (everything mode) must not chain rows of tiles into one component.

        Two partial views are linked the same way when one is a *sliver*: its pixels in the window
        lie within the other view's box grown by 2 px (1 px of jitter each), a quarter of them
        within 1 px of the other view, and none of the other tile's views shares them (an object
        barely entering a tile comes out as a 1-2 px strip at that tile's edge, next to the
        neighbour's view of it shrunk by 1 px; the neighbour sees that strip and has no mask of
        its own there). Two buildings 1 px apart are linked this way only when the second is such
        a strip there, no taller than the first, and the other tile missed it."""
        wide = grow(win, 1)
        a = self._in_window(new, intersect(wide, tile.box), 0, 0)
        b = self._in_window(old, intersect(wide, other.box), 0, 0)
        if not a or not b:
            return
        ga = np.array([grow(x[1], 1) for x in a])
        bb = np.array([x[1] for x in b])
        wa = np.array([self._views[x[0]].whole for x in a])
        wb = np.array([self._views[x[0]].whole for x in b])
        touch = ((np.minimum(ga[:, None, 2], bb[None, :, 2]) > np.maximum(ga[:, None, 0], bb[None, :, 0]))
                 & (np.minimum(ga[:, None, 3], bb[None, :, 3]) > np.maximum(ga[:, None, 1], bb[None, :, 1])))
        for i, j in zip(*np.nonzero(touch)):
            (va_id, _, an), (vb_id, _, bn) = a[i], b[j]
            if self._find(va_id) == self._find(vb_id):
                continue
            if not wa[i] and not wb[j]:
                self._link_sliver(a[i], b[j], [x[0] for x in a], [x[0] for x in b], win)
                continue
            va, vb = self._views[va_id], self._views[vb_id]
            (w, wid), (p, pid, pn) = ((va, va_id), (vb, vb_id, bn)) if va.whole else ((vb, vb_id), (va, va_id, an))
            need = 0.25 * min(w.area, pn)
            if self.nested and w.area < 0.25 * pn:
                continue
            wcrop, pcrop = self._crop(wid), self._crop(pid)
            if overlap(w.box, wcrop, p.box, pcrop) >= need or near(w.box, wcrop, p.box, pcrop) >= need:
                self._union(va_id, vb_id)

    def _link_sliver(self, x: tuple[int, Box, int], y: tuple[int, Box, int], xs: list[int], ys: list[int],
                     win: Box) -> None:
        """Join partial views ``x`` and ``y`` (``(id, box in the window, pixels in the window)``, of
        tiles whose views are ``xs`` and ``ys``) when the one with fewer pixels in the shared window
        ``win`` is a sliver of the other's object (see :meth:`_link_near`)."""
        for (p, _, _), (q, _, _), others in ((x, y, ys), (y, x, xs)):
            pv, qv = self._views[p], self._views[q]
            pin = intersect(pv.box, win)
            if pin is None:
                continue
            part = crop_window(self._crop(p), pv.box, pin)
            n = int(np.count_nonzero(part))
            tb = tight(part)
            if n == 0 or not _box_within(np.add(tb, pin[:2] * 2), np.array(grow(qv.box, 2)), 0) \
                    or near(qv.box, self._crop(q), pin, part) < 0.25 * n:
                continue
            if any(intersect(self._views[o].box, pin) and overlap(self._views[o].box, self._crop(o), pin, part)
                   for o in others):  # the other tile has a mask there: matched (or another object)
                continue
            self._links[p].add(q)
            self._links[q].add(p)
            self._union(p, q)
            return

    def _union_iou(self, c: int, others: list[int], win: Box) -> float:
        """IoU, within ``win``, of view ``c`` with the union of ``others``; 0 when ``others``
        overlap each other by more than a fifth of the smaller (nested masks, such as an object
        and its parts, are not a split view)."""
        boxes = [self._views[o].box for o in [c, *others]]
        sub = intersect((min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes),
                         max(b[3] for b in boxes)), win)
        if sub is None:
            return 0.0
        x = self._window_mask(c, sub)
        union = np.zeros_like(x)
        for o in others:
            m = self._window_mask(o, sub)
            n = np.count_nonzero(m)
            if np.count_nonzero(m & union) > 0.2 * n:
                return 0.0
            union |= m
        u = np.count_nonzero(x | union)
        return np.count_nonzero(x & union) / u if u else 0.0

    def _window_mask(self, v: int, win: Box) -> np.ndarray:
        return crop_window(self._crop(v), self._views[v].box, win)

    def _crop(self, v: int) -> np.ndarray:
        crop = self._crops.get(v)
        if crop is None:
            view = self._views[v]
            crop = self._crops[v] = np.unpackbits(view.bits, axis=1, count=view.width).view(bool)
        return crop

    def _in_window(self, ids: list[int], win: Box, dx: int, dy: int) -> list[tuple[int, Box, int]]:
        """(id, tight box of its pixels within ``win`` shifted by (dx, dy), pixels within ``win``)
        of the views with pixels there."""
        out = []
        for v in ids:
            view = self._views[v]
            ib = intersect(view.box, win)
            if ib is None:
                continue
            x0, y0 = view.box[:2]
            part = self._crop(v)[ib[1] - y0:ib[3] - y0, ib[0] - x0:ib[2] - x0]
            tb = tight(part)
            if tb is not None:
                tx0, ty0, tx1, ty1 = tb
                out.append((v, (ib[0] + tx0 + dx, ib[1] + ty0 + dy, ib[0] + tx1 + dx, ib[1] + ty1 + dy),
                            int(np.count_nonzero(part))))
        return out

    def _find(self, v: int) -> int:
        root = v
        while self._parent[root] != root:
            root = self._parent[root]
        while self._parent[v] != root:
            self._parent[v], v = root, self._parent[v]
        return root

    def _union(self, a: int, b: int) -> None:
        ra, rb = self._find(a), self._find(b)
        if ra == rb:
            return
        if len(self._members[ra]) < len(self._members[rb]):
            ra, rb = rb, ra
        self._parent[rb] = ra
        self._members[ra].extend(self._members.pop(rb))
        self._gbox[ra] = union_box(self._gbox[ra], self._gbox.pop(rb))

    def _check(self, root: int, out: list[MergedObject]) -> None:
        for t in self.grid.intersecting(grow(self._gbox[root], 1)):
            ti = self.grid.index(t)
            if ti not in self._processed:
                self._waiting.setdefault(ti, set()).add(root)
                return
        self._resolve(root, out)

    # -- resolving a component --------------------------------------------------------------

    def _resolve(self, root: int, out: list[MergedObject]) -> None:
        ids = self._members.pop(root)
        self._gbox.pop(root)
        views = {v: self._views[v] for v in ids}
        for v in ids:
            self._crop(v)
        links = {v: self._links.pop(v) for v in ids}
        for v, view in views.items():
            del self._parent[v], self._views[v]
            tile_set = self._by_tile[view.tile]
            tile_set.discard(v)
            if not tile_set:
                del self._by_tile[view.tile]
        crops = {v: self._crops.pop(v) for v in ids}
        wholes = [v for v in ids if views[v].whole]
        seen = Relations(self.grid, views, crops)
        # what each whole view is a piece of: a view of another tile that contains it and
        # reaches clearly past it (the object that tile sees as one mask, or only in part)
        within = {v: [c for c in seen.containing(v) if seen.piece_of(v, c, self.nested)] for v in wholes}
        rank = (lambda v: (-views[v].edge, -views[v].score)) if self.prefer == "edge" else \
            (lambda v: (-views[v].score, -views[v].edge))
        is_kept = np.zeros(len(ids), bool)  # over seen.ids
        for v in sorted(wholes, key=lambda v: (bool(within[v]), *rank(v))):
            if not any(k in within[v] or seen.same_object(v, k) for k in seen.near_boxes(v, is_kept)):
                is_kept[seen.pos[v]] = True
        rest = [v for v in ids if not views[v].whole and not seen.covered(v, is_kept)]
        survive = set(rest)  # a piece of an object only seen in part gives way to those parts
        kept = [v for v in seen.ids[is_kept].tolist() if not any(c in survive for c in within[v])]
        objs = [self._object([v], views, crops) for v in kept] + \
            [self._object(group, views, crops) for group in groups(rest, links)]
        out.extend(objs if self.nested or len(objs) < 2 else suppress_overlaps(objs))

    def _object(self, ids: list[int], views: dict[int, View], crops: dict[int, np.ndarray]) -> MergedObject:
        """One object from views ``ids``: one view, or the union of several partial views."""
        vs = [views[v] for v in ids]
        box = vs[0].box
        for v in vs[1:]:
            box = union_box(box, v.box)
        total = sum(v.area for v in vs)
        score = sum(v.score * v.area for v in vs) / total if total else vs[0].score
        rated = [v for v in vs if not math.isnan(v.quality)]  # area-weighted like score, over views that have one
        weight = sum(v.area for v in rated)
        quality = sum(v.quality * v.area for v in rated) / weight if weight else \
            (rated[0].quality if rated else math.nan)
        parts: tuple[Part, ...] = tuple((v.box, crops[i]) for i, v in zip(ids, vs))
        nodata = tuple((v.box, np.unpackbits(v.nodata, axis=1, count=v.width).view(bool))
                       for v in vs if v.nodata is not None)
        return MergedObject(box, parts, float(score), len({v.tile for v in vs}),
                            tuple((v.tile, v.index, v.area) for v in vs), nodata, float(quality))


def _box_within(inner: np.ndarray, outer: np.ndarray, slack: int) -> np.ndarray:
    """Whether boxes ``inner`` lie within ``outer`` (broadcast ``(..., 4)`` arrays), give or take ``slack`` px."""
    return ((inner[..., 0] >= outer[..., 0] - slack) & (inner[..., 1] >= outer[..., 1] - slack)
            & (inner[..., 2] <= outer[..., 2] + slack) & (inner[..., 3] <= outer[..., 3] + slack))


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


def _close_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """:func:`~fastsam_geo.views.boxes_close` for every pair of boxes ``a`` ``(N, 4)``, ``b`` ``(M, 4)``."""
    size = np.maximum((a[:, 2:] - a[:, :2]).max(1)[:, None], (b[:, 2:] - b[:, :2]).max(1)[None, :])
    tol = np.maximum(2.0, 0.15 * size)
    return (np.abs(a[:, None, :] - b[None, :, :]) <= tol[..., None]).all(-1)


def suppress_overlaps(objs: list[MergedObject], iou: float = DEDUP_IOU,
                      contain: float = DEDUP_CONTAIN) -> list[MergedObject]:
    """:func:`~fastsam_geo.masks.suppress_duplicates` across tiles: of the objects one component
    resolved to, those overlapping a better-scoring one by IoU >= ``iou`` or by ``contain`` of
    the smaller are dropped (two tiles that drew one roof differently enough that neither is
    the same object nor a piece of the other)."""
    kept: list[MergedObject] = []
    for o in sorted(objs, key=lambda o: -o.score):
        dup = False
        for k in kept:
            ib = intersect(o.box, k.box)
            if ib is None:
                continue
            inter = int(np.count_nonzero(o.window_mask(ib) & k.window_mask(ib)))
            if inter >= iou * (o.area + k.area - inter) or inter >= contain * min(o.area, k.area):
                dup = True
                break
        if not dup:
            kept.append(o)
    return kept
