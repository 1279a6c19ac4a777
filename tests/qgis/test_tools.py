"""The map tools, end to end: synthetic clicks and drags on a canvas in EPSG:3857 over a GeoTIFF in
EPSG:32633 give that building's polygon in the result layer; later prompts answer from the cache."""

from __future__ import annotations

from qgis.core import Qgis
from qgis.PyQt.QtCore import QEvent, Qt
from qgis_fixtures import add_raster, best_match, click, device_point, key, mouse, shapes, wait

CENTRE = 17  # a building in the middle of the scene, away from its edges


def test_point_tool_click_gives_the_building(plugin, canvas, scene):
    layer = add_raster(plugin, canvas, scene)
    plugin.actions["points"].trigger()
    tool = canvas.mapTool()
    assert tool is plugin.point_tool
    click(tool, canvas, device_point(canvas, *scene.interior(CENTRE)))
    assert len(tool.points) == 1 and tool.markers[1].numberOfVertices() == 1  # a rubber-band marker
    key(tool, Qt.Key_Return)
    wait(plugin, plugin.last_task)
    result = plugin.results.layer(scene.path)
    assert result is not None and result.crs() == layer.crs()
    geoms = shapes(result)
    assert len(geoms) == 1
    k, v = best_match(geoms[0], scene.truth)
    assert k == CENTRE and v > 0.99, (k, v)
    f = next(result.getFeatures())
    assert f["score"] > 0 and abs(f["area_m2"] - scene.truth[CENTRE].area) / scene.truth[CENTRE].area < 0.01
    assert f["prompt"].startswith("point")
    assert not tool.points and tool.markers[1].numberOfVertices() == 0  # markers cleared after the run


def test_later_clicks_answer_from_the_cache(plugin, canvas, scene):
    add_raster(plugin, canvas, scene)
    tool = plugin.point_tool
    canvas.setMapTool(tool)
    click(tool, canvas, device_point(canvas, *scene.interior(CENTRE)))
    plugin.actions["run_points"].trigger()
    wait(plugin, plugin.last_task)
    sr = plugin.sessions.get(plugin.dock.job())
    seg = sr.segmenter
    first = seg.calls
    assert 0 < first < len(sr.grid.tiles), "the first prompt segments only the tiles it needs"
    # another building wholly inside the core of the tile that owns the first click
    c, r = ~sr.info.transform @ scene.interior(CENTRE)
    tile = next(iter(sr.grid.owning((int(c), int(r), int(c) + 1, int(r) + 1))))
    x0, y0, x1, y1 = tile.core
    neighbour = next(k for k, f in enumerate(scene.scene.footprints) if k != CENTRE and
                     x0 < f.bounds[0] and f.bounds[2] < x1 and y0 < f.bounds[1] and f.bounds[3] < y1)
    click(tool, canvas, device_point(canvas, *scene.interior(neighbour)))
    key(tool, Qt.Key_Enter)
    wait(plugin, plugin.last_task)
    assert plugin.sessions.get(plugin.dock.job()) is sr, "one session per raster and options"
    assert seg.calls == first, "a prompt on segmented tiles must not run the segmenter again"
    assert [best_match(g, scene.truth)[0] for g in shapes(plugin.results.layer(scene.path))] == [CENTRE, neighbour]


def test_right_click_is_a_background_point(plugin, canvas, scene):
    add_raster(plugin, canvas, scene)
    tool = plugin.point_tool
    canvas.setMapTool(tool)
    x, y = scene.interior(CENTRE)
    click(tool, canvas, device_point(canvas, x, y))
    click(tool, canvas, device_point(canvas, x, y), Qt.RightButton)  # the same roof as background: nothing left
    assert [label for _, label in tool.points] == [1, 0] and tool.markers[0].numberOfVertices() == 1
    key(tool, Qt.Key_Return)
    wait(plugin, plugin.last_task)
    assert plugin.results.layer(scene.path).featureCount() == 0
    assert "selected nothing" in plugin.dock.status.text()


def test_box_tool_drag_gives_the_building(plugin, canvas, scene):
    add_raster(plugin, canvas, scene)
    plugin.actions["box"].trigger()
    tool = canvas.mapTool()
    assert tool is plugin.box_tool
    x0, y0, x1, y1 = scene.truth[CENTRE].buffer(1.5, join_style="mitre").bounds
    tool.canvasPressEvent(mouse(canvas, QEvent.MouseButtonPress, device_point(canvas, x0, y1)))
    tool.canvasMoveEvent(mouse(canvas, QEvent.MouseMove, device_point(canvas, (x0 + x1) / 2, (y0 + y1) / 2)))
    assert tool.band.numberOfVertices() > 0  # the rubber band follows the drag
    tool.canvasReleaseEvent(mouse(canvas, QEvent.MouseButtonRelease, device_point(canvas, x1, y0)))
    wait(plugin, plugin.last_task)
    geoms = shapes(plugin.results.layer(scene.path))
    assert len(geoms) == 1
    k, v = best_match(geoms[0], scene.truth)
    assert k == CENTRE and v > 0.99, (k, v)


def test_undo_and_save(plugin, canvas, scene, tmp_path):
    add_raster(plugin, canvas, scene)
    tool = plugin.point_tool
    canvas.setMapTool(tool)
    for k in (CENTRE, CENTRE + 1):
        click(tool, canvas, device_point(canvas, *scene.interior(k)))
        key(tool, Qt.Key_Return)
        wait(plugin, plugin.last_task)
    result = plugin.results.layer(scene.path)
    assert result.featureCount() == 2
    plugin.actions["undo"].trigger()
    assert result.featureCount() == 1
    assert best_match(shapes(result)[0], scene.truth)[0] == CENTRE
    out = tmp_path / "picked.gpkg"
    plugin.save(str(out))
    import geopandas as gpd

    saved = gpd.read_file(out)
    assert len(saved) == 1 and list(saved.columns[:3]) == ["score", "area_m2", "prompt"]
    assert saved.crs.to_epsg() == 32633
    assert not plugin.iface.messageBar().get_messages(Qgis.Critical)


def test_text_prompt_disabled_with_a_clear_message(plugin):
    dock = plugin.dock
    assert not dock.text.isEnabled() and not dock.find.isEnabled()
    note = dock.text_note.text()
    assert "fastsam-geo[text]" in note or "CLIP weights" in note, note
    assert plugin.run_text("") is None


def test_bad_options_are_one_message(plugin, canvas, scene):
    add_raster(plugin, canvas, scene)
    plugin.dock.overlap.setValue(512)  # >= tile size 256
    assert plugin.segment() is None
    msgs = plugin.iface.messageBar().get_messages(Qgis.Warning)
    assert any("overlap" in m for m in msgs), msgs


def test_dock_settings_are_remembered(plugin, canvas, scene):
    from fastsam_geo_qgis.dock import Dock

    layer = add_raster(plugin, canvas, scene)
    plugin.dock.model.setCurrentText("FastSAM-s.pt")
    plugin.dock.device.setCurrentText("cuda")
    plugin.dock.tile_size.setValue(512)
    plugin.dock.min_area.setValue(40)
    plugin.dock.regularize.setChecked(True)
    again = Dock(None, plugin.actions)  # what the next QGIS session shows
    assert again.model.currentText() == "FastSAM-s.pt" and again.device.currentText() == "cuda"
    assert again.tile_size.value() == 512 and again.min_area.value() == 40 and again.regularize.isChecked()
    again.layer_combo.setLayer(layer)
    job = again.job()
    assert job.segmenter == "FastSAM-s.pt" and (job.options.tile_size, job.options.min_area) == (512, 40)
    assert job.options.regularize
    plugin.dock.regularize.setChecked(False)
    assert not Dock(None, plugin.actions).regularize.isChecked()  # "false" read back is False
    again.deleteLater()


def test_dock_gsd_is_remembered_and_reaches_the_options(plugin, canvas, scene):
    from fastsam_geo_qgis.dock import Dock

    layer = add_raster(plugin, canvas, scene)
    dock = plugin.dock
    assert dock.gsd.currentText() == "auto" and dock.job().options.gsd == "auto"
    assert all(w in dock.gsd.toolTip() for w in ("auto", "native", "m/px"))
    for typed, gsd in (("native", "native"), (" 0.5 ", 0.5), ("AUTO", "auto")):
        dock.gsd.setCurrentText(typed)
        again = Dock(None, plugin.actions)  # what the next QGIS session shows
        again.layer_combo.setLayer(layer)
        assert again.gsd.currentText() == typed and again.job().options.gsd == gsd
        again.deleteLater()
    bar = plugin.iface.messageBar()
    for bad in ("fast", "0", "-2"):
        dock.gsd.setCurrentText(bad)
        bar.clear_messages()
        assert plugin.segment() is None and not plugin.tasks  # no options, no task: one message
        (msg,) = bar.get_messages(Qgis.Warning)
        assert "gsd must be auto, native or a positive number of metres per pixel" in msg, msg


def test_without_torch_a_model_run_is_one_message_with_the_command(plugin, canvas, scene):
    import importlib.util

    import pytest

    if importlib.util.find_spec("torch") is not None:
        pytest.skip("torch is installed in this QGIS environment")
    from fastsam_geo_qgis import pip_command

    add_raster(plugin, canvas, scene)
    plugin.dock.model.setCurrentText("buildings-nano")
    bar = plugin.iface.messageBar()
    assert any(pip_command() in m for m in bar.get_messages(Qgis.Warning))  # said when the plugin started
    task = plugin.segment()
    wait(plugin, task)
    assert task.outcome == "failed"
    (msg,) = bar.get_messages(Qgis.Critical)
    assert "torch" in msg and pip_command() in msg
