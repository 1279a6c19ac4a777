"""An interactive web map of a raster and its objects (folium), for notebooks.

Folium is imported inside :func:`explore` only; without it, or offline, the map falls back to
:func:`fastsam_geo.plots.show_objects`' static picture.
"""

from __future__ import annotations

import os
import threading

import geopandas as gpd
import numpy as np
import rasterio
from pyproj import CRS

from .coords import transform_xy
from .display import MAX_SIZE, as_frame, read_image, view_of


def explore(raster: str | os.PathLike, objects=None, *, online: bool | None = None, max_size: int = 1024,
            tiles: str | None = "OpenStreetMap", color: str | None = None):
    """An interactive folium map: ``raster`` (decimated, in Web Mercator) as an image layer over
    a ``tiles`` basemap, with the outlines of ``objects`` (score and area in a tooltip) and a
    layer switch; ``color`` (default :data:`fastsam_geo.plots.OUTLINE`'s) outlines the objects.

    Folium's page loads Leaflet from a CDN, so without internet it would be a blank box.
    Without folium, or offline (``online=False``, or ``None`` and the CDN unreachable within
    2 s), this falls back to the static :func:`show_objects` picture, returned as a matplotlib
    ``Figure`` (not registered with pyplot: a notebook shows it once, ``.savefig`` writes it);
    otherwise returns the ``folium.Map``. Either way, make it a notebook cell's last value.
    """
    from .plots import OUTLINE, _figsize, show_objects  # the static fallback and the shared style

    color = color or OUTLINE["edgecolor"]
    try:
        import folium
    except ImportError:
        folium = None
    if folium is None or not (online if online is not None else is_online()):
        from matplotlib.figure import Figure

        view = view_of(raster, None, None)
        fig = Figure(figsize=_figsize(view.bounds), layout="constrained")
        ax = show_objects(raster, objects if objects is not None else gpd.GeoSeries([]), fig.add_subplot(),
                          max_size=max(max_size, MAX_SIZE))
        ax.set_title(f"{ax.get_title()} (static: {'folium is not installed' if folium is None else 'offline'})")
        return fig
    from rasterio.warp import Resampling as WarpResampling
    from rasterio.warp import calculate_default_transform, reproject

    arr, transform, view = read_image(raster, max_size=max_size)
    merc = CRS.from_epsg(3857)
    h, w = arr.shape[:2]
    if view.crs != merc:
        dst_t, dw, dh = calculate_default_transform(view.crs, merc, w, h, *rasterio.transform.array_bounds(
            h, w, transform))
        out = np.zeros((4, dh, dw), np.uint8)
        reproject(arr.transpose(2, 0, 1), out, src_transform=transform, src_crs=view.crs, dst_transform=dst_t,
                  dst_crs=merc, resampling=WarpResampling.bilinear)
        arr, transform, h, w = out.transpose(1, 2, 0), dst_t, dh, dw
    west, south, east, north = rasterio.transform.array_bounds(h, w, transform)
    (lon0, lon1), (lat0, lat1) = transform_xy([west, east], [south, north], merc, CRS.from_epsg(4326))
    m = folium.Map(tiles=tiles, control_scale=True, max_zoom=22)
    folium.raster_layers.ImageOverlay(np.ascontiguousarray(arr), bounds=[[lat0, lon0], [lat1, lon1]],
                                      name=os.path.basename(os.fspath(raster)), mercator_project=False).add_to(m)
    if objects is not None:
        gdf = as_frame(objects)
        gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty].to_crs(4326)
        fields = [c for c in ("score", "area_m2", "prompt_id") if c in gdf.columns]
        folium.GeoJson(gdf[[*fields, "geometry"]].to_json(), name=f"objects ({len(gdf)})",
                       style_function=lambda _: {"color": color, "weight": 2, "fillOpacity": 0.0},
                       tooltip=folium.GeoJsonTooltip(fields=fields) if fields else None).add_to(m)
    folium.LayerControl().add_to(m)
    m.fit_bounds([[lat0, lon0], [lat1, lon1]])
    return m


def is_online(host: str = "cdn.jsdelivr.net", port: int = 443, timeout: float = 2.0) -> bool:
    """Whether ``host`` (Leaflet's CDN) accepts a connection within ``timeout`` seconds (name
    lookup included, which sockets alone do not time out)."""
    import socket

    ok: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            ok.append(True)
        except OSError:
            pass

    th = threading.Thread(target=probe, daemon=True)
    th.start()
    th.join(timeout)
    return bool(ok)
