"""Tasks: cancel stops a running segmentation; the map view is tiled on the raster's own grid, so
its objects are identical to a whole-raster run's."""

from __future__ import annotations

import threading
import time
import warnings

import shapely
from qgis.core import (
    Qgis,
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsGeometry,
    QgsProject,
    QgsRectangle,
)
from qgis_fixtures import COUNTING, PERTURBED, SLOW, Scene, add_raster, shapes, wait

from fastsam_geo.errors import GsdWarning
from fastsam_geo.synthetic import make_scene, write_scene


def test_cancel_stops_a_running_task(plugin, canvas, big_scene):
    add_raster(plugin, canvas, big_scene)
    plugin.dock.model.setCurrentText(SLOW)  # 0.1 s a tile, 81 tiles: ~8 s if not cancelled
    task = plugin.segment()
    end = time.monotonic() + 30
    while task.progress() <= 0 and time.monotonic() < end:  # it is running: some tiles done
        QgsApplication.processEvents()
        time.sleep(0.01)
    assert 0 < task.progress() < 50
    t0 = time.monotonic()
    plugin.dock.cancel.click()
    wait(plugin, task, timeout=30)
    assert time.monotonic() - t0 < 2.0, "cancel must stop the run within a batch or two"
    assert task.outcome == "cancelled" and task.error is None  # read on the Python side: QGIS deleted the task
    assert task.features == []
    assert plugin.dock.status.text() == "cancelled"
    layer = plugin.results.layer(big_scene.path)
    assert layer is None or layer.featureCount() == 0


def test_map_view_gives_the_objects_of_a_whole_raster_run(plugin, canvas, tmp_path):
    """With tiles that disagree (PerturbedSegmenter: each tile's view jittered, split or missed by its
    pixels), only the raster's own tile grid gives the same objects as the whole run."""
    s = make_scene(1400, 1000, seed=5, crs="EPSG:32633")
    path = tmp_path / "perturbed.tif"
    write_scene(s, path)
    layer = add_raster(plugin, canvas, Scene(path, s))
    plugin.dock.model.setCurrentText(PERTURBED)
    t = s.transform
    # a view in EPSG:3857 over raster pixels ~ (333..1011, 217..801): not aligned with any tile
    view_utm = QgsRectangle(t.c + 333 * t.a, t.f + 801 * t.e, t.c + 1011 * t.a, t.f + 217 * t.e)
    to_canvas = QgsCoordinateTransform(layer.crs(), canvas.mapSettings().destinationCrs(), QgsProject.instance())
    canvas.setExtent(to_canvas.transformBoundingBox(view_utm))
    extent = canvas.extent()  # what the canvas shows (its aspect ratio may widen it)
    wait(plugin, plugin.segment(view=True))
    plugin.sessions.clear()  # the whole run must not reuse the view run's tiles
    wait(plugin, plugin.segment())
    result = plugin.results.layer(str(path))
    view = shapes(result, "prompt = 'everything in view'")
    whole = shapes(result, "prompt = 'everything'")
    assert 0 < len(view) < len(whole)
    # the view in the raster's CRS (densified: reprojected edges curve)
    to_raster = QgsCoordinateTransform(QgsCoordinateReferenceSystem("EPSG:3857"), layer.crs(), QgsProject.instance())
    g = QgsGeometry.fromRect(extent).densifyByCount(50)
    g.transform(to_raster)
    area = shapely.from_wkb(bytes(g.asWkb()))
    inside = [w for w in whole if area.buffer(-1.0).contains(w)]
    assert len(inside) >= 10
    for w in inside:
        assert any(v.equals_exact(w, 1e-6) for v in view), "an object inside the view differs from the whole run's"
    for v in view:
        assert any(v.equals_exact(w, 1e-6) for w in whole), "the view run made an object the whole run does not have"


def test_tasks_in_a_row_on_pooled_threads(plugin, canvas, scene):
    """QGIS reuses its pooled threads; pyproj's per-thread PROJ context must not outlive a task there
    (it did: a segmentation fault in proj_create on the next task, fixed by tasks.in_python_thread)."""
    add_raster(plugin, canvas, scene)
    for _ in range(4):
        plugin.sessions.clear()  # every task opens the raster again: CRSs parsed on a pooled thread
        task = plugin.segment(view=True)
        wait(plugin, task)
        assert task.outcome == "done" and task.features


def test_tasks_on_one_raster_are_serialised(plugin, canvas, big_scene):
    """A SegmentedRaster is not thread-safe: two tasks on one raster and options share one session,
    one at a time (QGIS would run them at once on its thread pool)."""
    from qgis_fixtures import CountingSegmenter

    add_raster(plugin, canvas, big_scene)
    plugin.dock.model.setCurrentText(COUNTING)
    CountingSegmenter.reset()
    first, second = plugin.segment(), plugin.segment(view=True)
    wait(plugin, first)
    wait(plugin, second)
    assert first.outcome == second.outcome == "done"
    assert CountingSegmenter.instances == 1, "each task made its own session: the second one's cache is lost"
    assert CountingSegmenter.max_active == 1, "two tasks used one session at once"


def test_gsd_warning_of_a_task_reaches_the_message_bar(plugin, canvas, coarse_scene):
    """Raised in the task's thread, shown on the main thread once the task is done; two tasks recording at once
    leave Python's warnings as they found them."""
    add_raster(plugin, canvas, coarse_scene)
    plugin.dock.gsd.setCurrentText("5")
    bar = plugin.iface.messageBar()
    bar.clear_messages()  # the torch hint of the plugin's start
    shown = warnings.showwarning
    first, second = plugin.segment(), plugin.segment(view=True)  # one session: the second reuses the first's
    wait(plugin, first)
    wait(plugin, second)
    assert first.outcome == second.outcome == "done" and first.features
    assert bar.get_messages(Qgis.Warning) == [
        "FastSAM Geo:imagery at 0.6 m/px is 8.33x finer than the model's training imagery (5 m/px); "
        "expect fewer and rougher objects"]
    assert warnings.showwarning is shown and not bar.get_messages(Qgis.Critical)


def test_recorded_warnings_stay_with_their_thread_whatever_ends_first(monkeypatch):
    """Each thread gets its own fastsam-geo warnings, every time (not once per place), others pass through, and the
    first recorder ending first leaves no recorder behind (catch_warnings alone restores the state under the other)."""
    from fastsam_geo_qgis.tasks import recorded

    passed: list[str] = []
    monkeypatch.setattr(warnings, "showwarning", lambda message, *_: passed.append(str(message)))
    shown, a, b = warnings.showwarning, [], []
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()

    def first():
        with recorded(a):
            a_in.set()
            b_in.wait(5)
            warnings.warn("a", GsdWarning, stacklevel=1)
        a_out.set()

    def second():
        a_in.wait(5)
        with recorded(b):
            b_in.set()
            a_out.wait(5)
            for _ in range(2):
                warnings.warn("b", GsdWarning, stacklevel=1)
            warnings.warn("not ours", UserWarning, stacklevel=1)

    threads = [threading.Thread(target=f) for f in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert [str(w.message) for w in a] == ["a"] and [str(w.message) for w in b] == ["b", "b"]
    assert passed == ["not ours"] and warnings.showwarning is shown
