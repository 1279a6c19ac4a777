"""The ``quality`` column: from the engine's mask logits, through the cache and seam merging, to
``--min-quality``."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.windows import Window

from fastsam_geo import Options, segment_raster
from fastsam_geo.cache import encode, load_instances
from fastsam_geo.cli import main
from fastsam_geo.errors import InputError
from fastsam_geo.merge import SeamMerger
from fastsam_geo.pipeline import iter_objects
from fastsam_geo.prompts import PointPrompt
from fastsam_geo.raster import TileReader
from fastsam_geo.samples import SAMPLE_IMAGE
from fastsam_geo.synthetic import ColourSegmenter, PerturbedSegmenter, make_scene, write_scene
from fastsam_geo.tiling import plan_tiles
from fastsam_geo.types import Instances

TILE, OVERLAP = 256, 32


class QualitySegmenter:
    """Tiles that disagree (PerturbedSegmenter), each instance given a quality: one value per tile
    (``per="tile"``, seeded by its pixels) or one per instance (``per="instance"``)."""

    batch_size = 4

    def __init__(self, per: str = "instance"):
        self.base, self.per = PerturbedSegmenter(miss=0.0, split=0.0), per

    def __call__(self, images):
        out = []
        for img, inst in zip(images, self.base(images)):
            key = hashlib.sha1(np.ascontiguousarray(img).tobytes()).hexdigest()
            rng = np.random.default_rng(int(key[:12], 16))
            if self.per == "tile":
                q = np.full(len(inst), rng.uniform(0.2, 1.0), np.float32)
            else:
                q = rng.uniform(0.2, 1.0, len(inst)).astype(np.float32)
            out.append(Instances(inst.boxes, inst.scores, inst.crops, inst.shape, inst.invalid, q))
        return out


@pytest.fixture(scope="module")
def scene_path(tmp_path_factory):
    scene = make_scene(620, 560, seed=11, cell=62, big=(150, 130, 450, 420))  # big: larger than a tile
    return write_scene(scene, tmp_path_factory.mktemp("q") / "scene.tif")


def test_segmenters_without_probabilities_give_nan_quality(scene_path):
    gdf = segment_raster(scene_path, segmenter=ColourSegmenter(), tile_size=TILE, overlap=OVERLAP)
    assert "quality" in gdf and gdf["quality"].dtype == np.float32 and len(gdf) > 20
    assert gdf["quality"].isna().all()
    # --min-quality cannot judge them: they stay (documented)
    kept = segment_raster(scene_path, segmenter=ColourSegmenter(), tile_size=TILE, overlap=OVERLAP, min_quality=0.9)
    assert len(kept) == len(gdf)


def test_quality_is_carried_through_seam_merging_area_weighted(scene_path):
    seg = QualitySegmenter(per="tile")
    grid = plan_tiles(620, 560, TILE, OVERLAP)
    per_tile = {}

    def remember(images):  # each tile's quality, by tile index (images come in grid order)
        res = seg(images)
        for inst in res:
            per_tile[len(per_tile)] = float(inst.qualities[0]) if len(inst) else float("nan")
        return res

    with TileReader(scene_path) as reader:
        objects = [o for batch in iter_objects(reader, grid, remember, batch_size=1, threads=False,
                                               merger=SeamMerger(grid)) for o in batch]
    assert objects and all(np.isfinite(o.quality) for o in objects)
    joined = [o for o in objects if o.tiles > 1]
    assert joined, "the big building is joined from several tiles"
    for o in joined:
        expected = sum(per_tile[t] * n for t, _, n in o.sources) / sum(n for _, _, n in o.sources)
        assert o.quality == pytest.approx(expected, rel=1e-5), (o.quality, expected, o.sources)
    for o in objects:
        if o.tiles == 1:
            assert o.quality == pytest.approx(per_tile[o.sources[0][0]], rel=1e-6)


def test_min_quality_drops_exactly_the_objects_below_it(scene_path):
    kw = dict(tile_size=TILE, overlap=OVERLAP)
    every = segment_raster(scene_path, segmenter=QualitySegmenter(), **kw)
    assert every["quality"].notna().all() and every["quality"].min() < 0.6 < every["quality"].max()
    kept = segment_raster(scene_path, segmenter=QualitySegmenter(), min_quality=0.6, **kw)
    assert (kept["quality"] >= 0.6).all()
    assert len(kept) == int((every["quality"] >= 0.6).sum())


def test_min_quality_is_validated_everywhere(scene_path, tmp_path):
    with pytest.raises(InputError, match="min_quality must be a number in"):
        Options(min_quality=1.5)
    res = CliRunner().invoke(main, ["segment", str(scene_path), "-o", str(tmp_path / "o.gpkg"), "--min-quality", "2"])
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "min_quality" in res.output, res.output
    assert not (tmp_path / "o.gpkg").exists()


def test_quality_round_trips_through_the_cache_and_is_checked(tmp_path):
    crops = (np.ones((4, 5), bool), np.ones((3, 3), bool))
    inst = Instances(np.array([[0, 0, 5, 4], [6, 6, 9, 9]], np.int32), np.array([0.9, 0.5], np.float32), crops,
                     (16, 16), quality=np.array([0.75, 0.25], np.float32))
    np.savez(tmp_path / "good.npz", **encode(inst))
    got = load_instances(tmp_path / "good.npz", (16, 16))
    assert np.array_equal(got.quality, inst.quality)
    # a record without quality (older cache) reads as NaN; one outside [0, 1] is refused
    plain = encode(inst)
    del plain["quality"]
    np.savez(tmp_path / "plain.npz", **plain)
    assert np.isnan(load_instances(tmp_path / "plain.npz", (16, 16)).qualities).all()
    bad = dict(encode(inst), quality=np.array([2.0, 0.5], np.float32))
    np.savez(tmp_path / "bad.npz", **bad)
    from fastsam_geo.cache import BadEntry

    with pytest.raises(BadEntry, match="quality"):
        load_instances(tmp_path / "bad.npz", (16, 16))


def test_stability_score_separates_crisp_from_soft_masks():
    from fastsam_geo.engine.fastsam import stability

    yy, xx = np.mgrid[:64, :64]
    r = np.hypot(xx - 32, yy - 32)
    crisp = (20 - r) * 4.0  # logit slope 4 per px: the +-1 band is half a pixel wide
    soft = (20 - r) * 0.2  # slope 0.2: the band is 10 px wide
    assert stability(crisp) > 0.9 > 0.5 > stability(soft)
    assert stability(np.full((4, 4), -5.0)) == 0.0


def test_engine_quality_and_probability_agree_with_its_masks():
    """The bundled model on a crop of the shipped sample: every mask has a quality in [0, 1], and
    the probability map (max of sigmoid(logits)) is above 0.5 exactly on the union of the masks."""
    from fastsam_geo.engine.fastsam import STABILITY_OFFSET
    from fastsam_geo.models import load_segmenter

    with rasterio.open(SAMPLE_IMAGE) as src:
        img = np.ascontiguousarray(src.read((1, 2, 3), window=Window(512, 256, 512, 512)).transpose(1, 2, 0))
    seg = load_segmenter(None, Options(device="cpu"))
    inst = seg([img])[0]
    assert len(inst) > 3 and inst.quality is not None
    q = inst.qualities
    assert np.isfinite(q).all() and (q >= 0).all() and (q <= 1).all() and q.std() > 0.01
    prob = seg.probability([img])[0]
    assert prob.shape == img.shape[:2] and prob.dtype == np.float32
    union = np.zeros(img.shape[:2], bool)
    for (x0, y0, x1, y1), c in zip(inst.boxes.tolist(), inst.crops):
        union[y0:y1, x0:x1] |= c
    assert np.mean((prob > 0.5) != union) < 1e-4
    # crisper masks (higher quality) have a thinner band of uncertain pixels around them
    lo, hi = 1 / (1 + np.exp(STABILITY_OFFSET)), 1 / (1 + np.exp(-STABILITY_OFFSET))
    assert ((prob > lo) & (prob < hi)).any()


def test_a_prompt_run_filters_and_cleans_as_a_whole_run_does(scene_path):
    """Prompts select among the objects a whole run would write: none under --min-quality, none
    the footprint clean-up drops (m² limits), and each row carries its object's quality."""
    kw = dict(tile_size=TILE, overlap=OVERLAP)
    every = segment_raster(scene_path, segmenter=QualitySegmenter(), **kw)
    points = [PointPrompt(p.x, p.y) for p in every.geometry.representative_point()]
    picked = segment_raster(scene_path, segmenter=QualitySegmenter(), prompts=points, **kw)
    assert picked.found.all() and list(picked.columns)[3:5] == ["score", "quality"]
    assert np.allclose(picked["quality"], every["quality"], atol=1e-6)
    q = float(np.median(every["quality"]))
    strict = segment_raster(scene_path, segmenter=QualitySegmenter(), prompts=points, min_quality=q, **kw)
    assert list(strict.found) == list(every["quality"] >= q)
    assert strict["quality"].isna().tolist() == list(every["quality"] < q)
    small = float(np.median(every["area_m2"]))
    capped = segment_raster(scene_path, segmenter=QualitySegmenter(), prompts=points, max_area_m2=small, **kw)
    assert list(capped.found) == list(every["area_m2"] <= small)
    floored = segment_raster(scene_path, segmenter=QualitySegmenter(), prompts=points, min_area_m2=small, **kw)
    assert list(floored.found) == list(every["area_m2"] >= small)
