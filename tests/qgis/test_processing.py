"""The Processing provider: algorithms through processing.run, cancel through the feedback, and the
built zip's provider headless through a qgis_process.bin subprocess."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile

import geopandas as gpd
import pytest
import shapely
from pyproj import Transformer
from qgis.core import (
    QgsFeature,
    QgsGeometry,
    QgsPointXY,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsRectangle,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import Qt
from qgis_fixtures import COLOUR, ROOT, best_match

FAST = {"MODEL": COLOUR, "TILE_SIZE": 256, "OVERLAP": 32, "DEVICE": 1}


def run(alg: str, params: dict, feedback=None) -> dict:
    import processing

    return processing.run(f"fastsam_geo:{alg}", params, feedback=feedback)


def check_segments(path: str, scene) -> gpd.GeoDataFrame:
    layer = QgsVectorLayer(path, "out", "ogr")
    assert layer.isValid() and layer.featureCount() == len(scene.truth)
    gdf = gpd.read_file(path)
    assert gdf.crs.to_epsg() == 32633 and {"score", "area_m2"} <= set(gdf.columns)
    matched = {best_match(g, scene.truth) for g in gdf.geometry}
    assert len({k for k, _ in matched}) == len(scene.truth) and min(v for _, v in matched) > 0.99
    return gdf


def test_segment_raster_via_processing_run(plugin, scene, tmp_path):
    out = str(tmp_path / "segments.gpkg")
    res = run("segment_raster", {"INPUT": scene.path, **FAST, "OUTPUT": out})
    assert res["OUTPUT"] == out
    check_segments(out, scene)


def test_segment_raster_extent_in_another_crs(plugin, scene, tmp_path):
    to_ll = Transformer.from_crs(32633, 4326, always_xy=True)
    (lx0, lx1), (ly0, ly1) = to_ll.transform([500060, 500230], [4499880, 4499960])  # raster px ~200..767, 133..400
    out = str(tmp_path / "part.gpkg")
    run("segment_raster", {"INPUT": scene.path, **FAST, "EXTENT": f"{lx0},{lx1},{ly0},{ly1} [EPSG:4326]",
                           "OUTPUT": out})
    whole = str(tmp_path / "whole.gpkg")
    run("segment_raster", {"INPUT": scene.path, **FAST, "OUTPUT": whole})
    part, full = gpd.read_file(out), gpd.read_file(whole)
    assert 0 < len(part) < len(full)
    for g in part.geometry:
        assert any(g.equals_exact(w, 1e-6) for w in full.geometry)


def layer_of(kind: str, crs: str, geoms: list, fields: str = "") -> QgsVectorLayer:
    layer = QgsVectorLayer(f"{kind}?crs={crs}{fields}", kind, "memory")
    feats = []
    for g, *attrs in geoms:
        f = QgsFeature(layer.fields())
        f.setGeometry(g)
        f.setAttributes(list(attrs))
        feats.append(f)
    layer.dataProvider().addFeatures(feats)
    return layer


def test_segment_with_prompts_in_other_crss(plugin, scene, tmp_path):
    to_ll = Transformer.from_crs(32633, 4326, always_xy=True)
    pts = [to_ll.transform(*scene.truth[k].buffer(-1).representative_point().coords[0]) for k in (3, 20)]
    pts.append(to_ll.transform(500000.6, 4499999.4))  # grey background in a corner: selects nothing
    points = layer_of("Point", "EPSG:4326", [(QgsGeometry.fromPointXY(QgsPointXY(*p)), 1) for p in pts],
                      "&field=label:integer")
    to_wm = Transformer.from_crs(32633, 3857, always_xy=True)
    bx0, by0, bx1, by1 = scene.truth[25].buffer(1.0, join_style="mitre").bounds
    (wx0, wx1), (wy0, wy1) = to_wm.transform([bx0, bx1], [by0, by1])
    boxes = layer_of("Polygon", "EPSG:3857", [(QgsGeometry.fromRect(QgsRectangle(wx0, wy0, wx1, wy1)),)])
    out = str(tmp_path / "prompts.gpkg")
    run("segment_prompts", {"INPUT": scene.path, **FAST, "POINTS": points, "LABEL_FIELD": "label",
                            "BOXES": boxes, "OUTPUT": out})
    gdf = gpd.read_file(out)
    assert list(gdf.prompt_id) == [0, 1, 2, 3] and list(gdf.prompt_type) == ["point"] * 3 + ["box"]
    assert list(gdf.found) == [True, True, False, True]
    got = [best_match(g, scene.truth)[0] for g in gdf.geometry[gdf.found]]
    assert got == [3, 20, 25]


def test_evaluate_against_footprints(plugin, scene, tmp_path):
    seg = str(tmp_path / "segments.gpkg")
    run("segment_raster", {"INPUT": scene.path, **FAST, "OUTPUT": seg})
    ref = str(tmp_path / "reference.gpkg")
    truth = gpd.GeoDataFrame(geometry=scene.truth, crs=32633).to_crs(4326)  # another CRS: reprojected
    truth.iloc[1:].to_file(ref)  # one reference missing: one false positive
    out = str(tmp_path / "matches.gpkg")
    res = run("evaluate", {"PREDICTIONS": seg, "REFERENCE": ref, "IOU": 0.5, "OUTPUT": out})
    n = len(scene.truth)
    assert (res["TP"], res["FP"], res["FN"]) == (n - 1, 1, 0)
    assert res["F1"] == pytest.approx(2 * (n - 1) / (2 * n - 1))
    matches = gpd.read_file(out)
    assert len(matches) == n and matches.matched.sum() == n - 1 and (matches.iou[matches.matched] > 0.9).all()


def test_evaluate_by_size_table(plugin, scene, tmp_path):
    """The optional table by size class: one row per class, ground m², a match in its reference's class."""
    seg = str(tmp_path / "segments.gpkg")
    run("segment_raster", {"INPUT": scene.path, **FAST, "OUTPUT": seg})
    truth = gpd.GeoDataFrame(geometry=scene.truth, crs=32633)
    ref = str(tmp_path / "reference.gpkg")
    truth.iloc[1:].to_crs(3857).to_file(ref)
    edge = float(truth.area.median())  # UTM m² are ground m² here
    table = str(tmp_path / "by_size.csv")
    res = run("evaluate", {"PREDICTIONS": seg, "REFERENCE": ref, "IOU": 0.5, "OUTPUT": str(tmp_path / "m.gpkg"),
                           "SIZE_CLASSES": f"{edge:.6f}", "BY_SIZE": table})
    rows = gpd.read_file(res["BY_SIZE"])
    small = int((truth.area.iloc[1:] < edge).sum())
    assert list(rows.tp.astype(int)) == [small, len(truth) - 1 - small]
    assert rows.fp.astype(int).sum() == res["FP"] == 1 and rows.fn.astype(int).sum() == 0
    assert float(rows.min_m2[1]) == pytest.approx(edge) and rows.max_m2.iloc[1] in ("", None)
    res = run("evaluate", {"PREDICTIONS": seg, "REFERENCE": ref, "IOU": 0.5, "OUTPUT": str(tmp_path / "n.gpkg")})
    assert "BY_SIZE" not in res  # not asked for: not written
    with pytest.raises(QgsProcessingException, match="sizes must be ascending"):
        run("evaluate", {"PREDICTIONS": seg, "REFERENCE": ref, "OUTPUT": str(tmp_path / "o.gpkg"),
                         "SIZE_CLASSES": "50,20", "BY_SIZE": str(tmp_path / "bad.csv")})


class Feedback(QgsProcessingFeedback):
    """Keeps what the algorithm pushes as warnings."""

    def __init__(self):
        super().__init__()
        self.warnings: list[str] = []

    def pushWarning(self, message):
        self.warnings.append(message)
        super().pushWarning(message)


def test_gsd_far_from_the_model_is_a_feedback_warning(plugin, coarse_scene, tmp_path):
    """GSD reaches the options, and the GsdWarning the run raises in its thread reaches the feedback, every run."""

    runs = iter(range(100))

    def warned(gsd: str) -> list[str]:
        feedback = Feedback()
        run("segment_raster", {"INPUT": coarse_scene.path, **FAST, "GSD": gsd,
                               "OUTPUT": str(tmp_path / f"out{next(runs)}.gpkg")}, feedback)
        return feedback.warnings

    assert warned("native") == [] and warned("auto") == []  # a segmenter without a card: no GSD to compare with
    for _ in range(2):  # not once per place, as Python shows a warning by default
        assert warned("5") == ["imagery at 0.6 m/px is 8.33x finer than the model's training imagery (5 m/px); "
                               "expect fewer and rougher objects"]
    # the bundled model's card (0.147 m/px): said before the run, also when the run then fails (no torch here)
    no_torch = importlib.util.find_spec("torch") is None
    feedback = Feedback()
    with pytest.raises(QgsProcessingException, match="torch") if no_torch else contextlib.nullcontext():
        run("segment_raster", {"INPUT": coarse_scene.path, "MODEL": "buildings-nano", "DEVICE": 1, "GSD": "auto",
                               "OUTPUT": str(tmp_path / "bundled.gpkg")}, feedback)
    (msg,) = feedback.warnings
    assert msg.startswith("imagery at 0.6 m/px is 4.03x coarser than the model's training imagery (0.144-0.149 m/px)")
    with pytest.raises(QgsProcessingException, match="gsd must be auto, native or a positive number"):
        warned("fine")


def test_processing_feedback_cancels(plugin, big_scene, tmp_path):
    feedback = QgsProcessingFeedback()
    # the run reports from its own thread: cancel right there, as the Cancel button would
    feedback.progressChanged.connect(lambda _: feedback.cancel(), Qt.DirectConnection)
    out = tmp_path / "cancelled.gpkg"
    with pytest.raises(QgsProcessingException):
        run("segment_raster", {"INPUT": big_scene.path, **FAST, "OUTPUT": str(out)}, feedback)
    assert feedback.isCanceled() and not out.exists(), "a cancelled run writes no output"
    assert 0 < feedback.progress() < 50


def qgis_process() -> str:
    exe = shutil.which("qgis_process.bin") or "/usr/lib/qgis/qgis_process.bin"
    if not os.path.exists(exe):
        if os.environ.get("CI"):
            pytest.fail("qgis_process.bin is missing (apt-get install qgis)")
        pytest.skip("qgis_process.bin is not installed (apt-get install qgis)")
    return exe


def test_qgis_process_runs_the_built_zip_headless(scene, tmp_path):
    """The zip built by scripts/build_plugin.py, enabled in a fresh profile, finds fastsam-geo through
    $FASTSAM_GEO_VENV (QGIS's own Python does not have it) and writes a valid layer."""
    exe = qgis_process()
    built = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_plugin.py"), "-o", str(tmp_path / "dist")],
                           capture_output=True, text=True, check=True).stdout.strip()
    plugins = tmp_path / "plugins"
    with zipfile.ZipFile(built) as zf:
        zf.extractall(plugins)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QGIS_", "PYTHON"))}
    env.update(HOME=str(tmp_path / "home"), QGIS_PLUGINPATH=str(plugins), FASTSAM_GEO_VENV=sys.prefix,
               QT_QPA_PLATFORM="offscreen")
    enable = subprocess.run([exe, "plugins", "enable", "fastsam_geo_qgis"], env=env, capture_output=True, text=True,
                            timeout=120)
    assert enable.returncode == 0, enable.stderr[-2000:]
    out = tmp_path / "headless.gpkg"
    proc = subprocess.run([exe, "--json", "run", "fastsam_geo:segment_raster", "--", f"INPUT={scene.path}",
                           f"MODEL={COLOUR}", "TILE_SIZE=256", "OVERLAP=32", f"OUTPUT={out}"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert result["results"]["OUTPUT"] == str(out)
    check_segments(str(out), scene)


def test_model_builder_chains_segment_into_evaluate(plugin, scene, tmp_path):
    """The segments are an ordinary output layer: a model feeds them to the next algorithm."""
    from qgis.core import (
        QgsProcessingModelAlgorithm,
        QgsProcessingModelChildAlgorithm,
        QgsProcessingModelChildParameterSource,
        QgsProcessingModelOutput,
        QgsProcessingModelParameter,
        QgsProcessingParameterFeatureSource,
        QgsProcessingParameterRasterLayer,
    )

    src = QgsProcessingModelChildParameterSource
    model = QgsProcessingModelAlgorithm("segment_and_score", "tests")
    model.addModelParameter(QgsProcessingParameterRasterLayer("raster", "Raster"),
                            QgsProcessingModelParameter("raster"))
    model.addModelParameter(QgsProcessingParameterFeatureSource("reference", "Reference"),
                            QgsProcessingModelParameter("reference"))
    seg = QgsProcessingModelChildAlgorithm("fastsam_geo:segment_raster")
    seg.setChildId("seg")
    seg.addParameterSources("INPUT", [src.fromModelParameter("raster")])
    for key, value in FAST.items():
        seg.addParameterSources(key, [src.fromStaticValue(value)])
    model.addChildAlgorithm(seg)
    ev = QgsProcessingModelChildAlgorithm("fastsam_geo:evaluate")
    ev.setChildId("ev")
    ev.addParameterSources("PREDICTIONS", [src.fromChildOutput("seg", "OUTPUT")])
    ev.addParameterSources("REFERENCE", [src.fromModelParameter("reference")])
    ev.addParameterSources("IOU", [src.fromStaticValue(0.5)])
    output = QgsProcessingModelOutput("matches")
    output.setChildId("ev")
    output.setChildOutputName("OUTPUT")
    ev.setModelOutputs({"matches": output})
    model.addChildAlgorithm(ev)
    ref = str(tmp_path / "reference.gpkg")
    gpd.GeoDataFrame(geometry=scene.truth, crs=32633).to_file(ref)
    out = str(tmp_path / "matches.gpkg")
    import processing

    res = processing.run(model, {"raster": scene.path, "reference": ref, "ev:matches": out})
    assert res["ev:matches"] == out
    matches = gpd.read_file(out)
    assert len(matches) == len(scene.truth) and matches.matched.all()


def test_prompt_layers_are_read_as_the_python_api_reads_them(plugin, scene, tmp_path):
    """The plugin holds no prompt rules of its own: a layer's `label` field (any case, text or
    numbers) is read without naming it, a text label field can be named, and a MultiPolygon
    is one box per part; the same layer through fastsam_geo.segment_raster gives the same rows."""
    from fastsam_geo import segment_raster
    from fastsam_geo.synthetic import ColourSegmenter

    inside = [scene.truth[k].buffer(-1).representative_point() for k in (3, 20)]
    points = layer_of("Point", "EPSG:32633", [(QgsGeometry.fromPointXY(QgsPointXY(p.x, p.y)), v)
                                               for p, v in zip(inside, ("1", "0"))], "&field=LABEL:string")
    boxes = layer_of("MultiPolygon", "EPSG:32633", [(QgsGeometry.fromWkt(shapely.MultiPolygon(
        [scene.truth[5].envelope, scene.truth[25].envelope]).wkt),)])
    out = str(tmp_path / "p.gpkg")
    run("segment_prompts", {"INPUT": scene.path, **FAST, "POINTS": points, "BOXES": boxes, "OUTPUT": out})
    got = gpd.read_file(out)
    assert list(got.prompt_type) == ["point", "box", "box"] and got.found.all()  # the "0" removes, no row
    assert [best_match(g, scene.truth)[0] for g in got.geometry] == [3, 5, 25]
    files = tmp_path / "pts.gpkg", tmp_path / "boxes.gpkg"
    gpd.GeoDataFrame({"LABEL": ["1", "0"]}, geometry=inside, crs=32633).to_file(files[0])
    gpd.GeoDataFrame(geometry=[shapely.MultiPolygon([scene.truth[5].envelope, scene.truth[25].envelope])],
                     crs=32633).to_file(files[1])
    from fastsam_geo import read_prompts

    api = segment_raster(scene.path, segmenter=ColourSegmenter(), tile_size=256, overlap=32,
                         prompts=read_prompts(files[0]) + read_prompts(files[1]))
    assert len(api) == len(got) and all(a.equals_exact(b, 1e-6) for a, b in zip(api.geometry, got.geometry))
    kinds = layer_of("Point", "EPSG:32633", [(QgsGeometry.fromPointXY(QgsPointXY(p.x, p.y)), v, w)
                                              for p, v, w in zip(inside, ("1", "0"), ("0", "1"))],
                     "&field=kind:string&field=label:string")
    named = str(tmp_path / "named.gpkg")  # the named text field is the label, the layer's own `label` is not
    run("segment_prompts", {"INPUT": scene.path, **FAST, "POINTS": kinds, "LABEL_FIELD": "kind", "OUTPUT": named})
    assert [best_match(g, scene.truth)[0] for g in gpd.read_file(named).geometry] == [3]


def test_re_evaluating_replaces_the_previous_match_columns(plugin, scene, tmp_path):
    """Evaluate's output chained into Evaluate again (Model Builder): the new matched / iou /
    ref_index replace the old ones instead of being dropped behind them."""
    seg = str(tmp_path / "segments.gpkg")
    run("segment_raster", {"INPUT": scene.path, **FAST, "OUTPUT": seg})
    full, half = str(tmp_path / "full.gpkg"), str(tmp_path / "half.gpkg")
    truth = gpd.GeoDataFrame(geometry=scene.truth, crs=32633)
    truth.to_file(full)
    truth.iloc[::2].to_file(half)
    first, second = str(tmp_path / "m1.gpkg"), str(tmp_path / "m2.gpkg")
    run("evaluate", {"PREDICTIONS": seg, "REFERENCE": full, "IOU": 0.5, "OUTPUT": first})
    res = run("evaluate", {"PREDICTIONS": first, "REFERENCE": half, "IOU": 0.5, "OUTPUT": second})
    again = gpd.read_file(second)
    assert int(again.matched.sum()) == res["TP"] == len(truth.iloc[::2]) < len(again)
    assert [c for c in again.columns if c in ("matched", "iou", "ref_index")] == ["matched", "iou", "ref_index"]


def test_curved_reference_polygons_are_scored(plugin, scene, tmp_path):
    """A reference with arcs (CurvePolygon, as survey layers have) is segmentised, not a traceback."""
    seg = str(tmp_path / "segments.gpkg")
    run("segment_raster", {"INPUT": scene.path, **FAST, "OUTPUT": seg})
    ref = layer_of("CurvePolygon", "EPSG:32633", [(QgsGeometry.fromWkt(
        shapely.Polygon(scene.truth[k].exterior).wkt.replace("POLYGON", "CURVEPOLYGON")),) for k in range(5)])
    assert ref.featureCount() == 5 and QgsWkbTypes.isCurvedType(ref.wkbType())
    res = run("evaluate", {"PREDICTIONS": seg, "REFERENCE": ref, "IOU": 0.5, "OUTPUT": str(tmp_path / "m.gpkg")})
    assert res["FN"] == 0 and res["TP"] >= 4
