"""Text prompts: crops of candidate objects, their (cached) embeddings, ranking by a text.

Each instance of a tile is cropped to its own box with every pixel outside its mask painted
white and padded to a square, so a crop never shows the neighbour's roof (a known failure of
bbox crops), and embedded once per tile in batches; embeddings are stored with the tile's
results, so a second text query on the same raster only encodes the text. A merged object
uses the embedding of the tile instance that contributed most of its pixels.

An *embedder* is anything with ``embed_images(list of (H, W, 3) uint8) -> (N, D)``,
``embed_texts(list of str) -> (T, D)`` (unit vectors) and a ``key`` string.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .types import Instances, MergedObject


def load_embedder(spec: object = None, *, device: str = "auto"):
    """``None`` -> CLIP ViT-B-32 (openai weights, from the local cache); a string -> a CLIP spec
    (see :mod:`fastsam_geo.engine.clip`); an object with ``embed_images`` -> itself."""
    if spec is not None and hasattr(spec, "embed_images"):
        return spec
    from .engine.clip import DEFAULT_CLIP, ClipEmbedder

    return ClipEmbedder(str(spec) if spec else DEFAULT_CLIP, device=device)


def object_crop(image: np.ndarray, box: Sequence[int], mask: np.ndarray, pad: int = 4) -> np.ndarray:
    """The object at ``box`` (tile pixels) of ``image``, outside-mask pixels white, padded square."""
    x0, y0, x1, y1 = (int(v) for v in box)
    crop = np.where(mask[..., None], image[y0:y1, x0:x1], np.uint8(255))
    h, w = crop.shape[:2]
    side = max(h, w) + 2 * pad
    out = np.full((side, side, 3), 255, np.uint8)
    oy, ox = (side - h) // 2, (side - w) // 2
    out[oy:oy + h, ox:ox + w] = crop
    return out


def tile_embeddings(image: np.ndarray, inst: Instances, embed) -> np.ndarray:
    """Embeddings ``(N, D)`` of every instance of one tile."""
    if len(inst) == 0:
        return np.zeros((0, 0), np.float32)
    crops = [object_crop(image, b, c) for b, c in zip(inst.boxes, inst.crops)]
    return np.asarray(embed.embed_images(crops), dtype=np.float32)


def object_embeddings(objects: Sequence[MergedObject], embed, store, reader, grid,
                      instances: Callable[[int], Instances] | None = None, key: str | None = None) -> np.ndarray:
    """Embeddings ``(N, D)`` of merged objects, computing (and storing) missing tiles' ones.

    ``instances(tile_index)`` gives a tile's instances as the merger saw them (the objects'
    sources index them), also when the store no longer holds them; default ``store.get``.
    ``key`` names the stored embeddings (default ``embed.key``; it must change whenever the
    instances handed to the merger would, e.g. with duplicate suppression).
    """
    instances = instances or store.get
    key = key or embed.key
    needed = {max(o.sources, key=lambda s: s[2])[0] for o in objects if o.sources}
    cache: dict[int, np.ndarray] = {}
    for ti in sorted(needed):
        emb = store.get_embeddings(ti, key)
        if emb is None:
            tile = grid.tiles[ti]
            image, _ = reader.read(tile)
            emb = tile_embeddings(image, instances(ti), embed)
            store.put_embeddings(ti, key, emb)
        cache[ti] = emb
    rows = []
    dim = max((e.shape[1] for e in cache.values() if e.size), default=1)
    for o in objects:
        if not o.sources:
            rows.append(np.zeros(dim, np.float32))
            continue
        ti, k, _ = max(o.sources, key=lambda s: s[2])
        rows.append(cache[ti][k])
    return np.asarray(rows, dtype=np.float32).reshape(len(objects), dim)


def rank_objects(objects: Sequence[MergedObject], obj_emb: np.ndarray, text_emb: np.ndarray,
                 top_k: int = 1) -> list[tuple[MergedObject | None, float]]:
    """The ``top_k`` objects most similar to ``text_emb`` with their cosine similarity."""
    if len(objects) == 0:
        return [(None, float("nan"))]
    sims = obj_emb @ np.asarray(text_emb, np.float32)
    order = np.argsort(-sims, kind="stable")[:top_k]
    return [(objects[i], float(sims[i])) for i in order]
