"""The disk cache is input: crafted or damaged files are discarded with a warning, in bounded
memory, and the tile is segmented again; the cache key follows the raster's whole content."""

from __future__ import annotations

import io
import os
import pickle
import shutil
import struct
import tracemalloc
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from fastsam_geo import cache as cache_mod
from fastsam_geo import rasterkey
from fastsam_geo.cache import DiskStore, encode, load_instances, raster_key
from fastsam_geo.errors import CacheWarning
from fastsam_geo.tiling import plan_tiles
from fastsam_geo.types import Instances

TILE = 64
GRID = plan_tiles(100, 100, TILE, 8)
RUN = {"model": "m", "tile_size": TILE}


def write_raster(path: Path, value: int = 7, size: int = 100) -> Path:
    data = np.full((1, size, size), value, np.uint8)
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=1, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(500000, 4500000, 1, 1)) as dst:
        dst.write(data)
    return path


@pytest.fixture
def raster(tmp_path):
    return write_raster(tmp_path / "r.tif")


def sample(shape=(TILE, TILE), n=3, invalid=False) -> Instances:
    rng = np.random.default_rng(1)
    boxes, crops = [], []
    for i in range(n):
        x0, y0 = 2 + 5 * i, 3 + 4 * i
        x1, y1 = x0 + 10 + i, y0 + 7
        crop = rng.random((y1 - y0, x1 - x0)) < 0.6
        crop[0, 0] = crop[-1, -1] = True
        boxes.append((x0, y0, x1, y1))
        crops.append(crop)
    inv = np.zeros(shape, bool)
    inv[:4, :4] = True
    return Instances(np.array(boxes, np.int32), np.linspace(0.9, 0.5, n).astype(np.float32), tuple(crops),
                     shape, inv if invalid else None)


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asanyarray(array), allow_pickle=True)
    return buf.getvalue()


def record(arrays: dict, *, compress: dict | None = None) -> bytes:
    """A zip of ``.npy`` members, as ``np.savez`` writes them (stored), or compressed per member."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, value in arrays.items():
            data = value if isinstance(value, bytes) else npy(value)
            zf.writestr(f"{name}.npy", data, compress_type=(compress or {}).get(name, zipfile.ZIP_STORED))
    return buf.getvalue()


def store_with(raster: Path, root: Path, name: str, content: bytes) -> tuple[DiskStore, Path]:
    """A store whose folder holds ``content`` as ``name``, opened afresh (as a later run would)."""
    first = DiskStore(root, raster, RUN, grid=GRID)
    path = first.dir / name
    path.write_bytes(content)
    return DiskStore(root, raster, RUN, grid=GRID), path


def bad_get(store: DiskStore, path: Path, get=lambda s: s.get(0)):
    """``get`` on a bad entry: ``(result, warnings, peak traced bytes)``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracemalloc.start()
        out = get(store)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    msgs = [str(w.message) for w in caught if issubclass(w.category, CacheWarning)]
    return out, msgs, peak


def good_arrays(**changes) -> dict:
    arrays = encode(sample(invalid=True))
    arrays.update(changes)
    return {k: v for k, v in arrays.items() if v is not None}


def central_size_lie(content: bytes, member: str, size: int) -> bytes:
    """``content`` with ``member``'s uncompressed size in the central directory set to ``size``."""
    data = bytearray(content)
    at = data.find(b"PK\x01\x02" + b"", 0)
    while at >= 0:
        n = struct.unpack("<H", data[at + 28:at + 30])[0]
        if data[at + 46:at + 46 + n].decode() == f"{member}.npy":
            data[at + 24:at + 28] = struct.pack("<I", size)
        at = data.find(b"PK\x01\x02", at + 4)
    return bytes(data)


def bomb() -> bytes:
    """A ``bits`` member deflated from 64 MiB of zeros to a few dozen kB, claiming a full tile's
    worth of masks (the 37 kB file that once took 3.2 GB)."""
    boxes = np.tile(np.array([[0, 0, TILE, TILE]], np.int32), (8192, 1))
    n = len(boxes)
    bits = np.zeros(n * TILE * TILE // 8, np.uint8)
    arrays = dict(boxes=boxes, scores=np.full(n, 0.5, np.float32), sizes=np.full(n, TILE * TILE, np.int64),
                  bits=bits, shape=np.array([TILE, TILE], np.int64))
    return record(arrays, compress={"bits": zipfile.ZIP_DEFLATED})


def consistent(box) -> bytes:
    """A record whose every array agrees with ``box`` (sizes, bits), the box itself being bad:
    only the bounds check can catch it."""
    x0, y0, x1, y1 = box
    crop = np.ones((y1 - y0, max(0, x1 - x0)), bool)
    inst = Instances(np.array([box], np.int32), np.array([0.9], np.float32), (crop,), (TILE, TILE))
    return record(encode(inst))


def truncated() -> bytes:
    good = record(good_arrays())
    return good[:len(good) * 2 // 3]


CRAFTED = {
    "huge declared sizes": lambda: record(good_arrays(sizes=np.array([2**40, 1, 1], np.int64))),
    "a member decompressing to 64 MiB": bomb,
    "a member declaring 4 GB uncompressed": lambda: central_size_lie(record(good_arrays()), "bits", 0xFFFFFFF0),
    "a header claiming 1e9 boxes": lambda: record(good_arrays(boxes=npy(np.zeros((3, 4), np.int32)).replace(
        b"(3, 4)", b"(1000000000, 4)"))),
    "wrong tile shape": lambda: record(good_arrays(shape=np.array([2 * TILE, TILE], np.int64))),
    "a box outside the tile": lambda: consistent((50, 11, TILE + 9, 18)),
    "a box with negative corners": lambda: consistent((-5, -5, 3, 3)),
    "an empty box": lambda: consistent((12, 11, 12, 18)),
    "bits one byte short": lambda: record(good_arrays(bits=encode(sample())["bits"][:-1])),
    "a NaN score": lambda: record(good_arrays(scores=np.array([0.9, np.nan, 0.5], np.float32))),
    "invalid of the wrong length": lambda: record(good_arrays(invalid=np.zeros(7, np.uint8))),
    "a missing member": lambda: record({k: v for k, v in good_arrays().items() if k != "bits"}),
    "an unknown member": lambda: record(good_arrays(extra=np.zeros(3))),
    "a pickle inside": lambda: record(good_arrays(boxes=np.array([{"evil": 1}, None], dtype=object))),
    "a pickle as the file": lambda: pickle.dumps({"boxes": [1, 2, 3]}),
    "a truncated zip": truncated,
    "random bytes": lambda: np.random.default_rng(3).bytes(37_000),
    "an empty file": lambda: b"",
    "ten thousand members": lambda: record({f"m{i}": np.zeros(1) for i in range(10_000)}),
}


@pytest.mark.parametrize("case", list(CRAFTED))
def test_a_crafted_or_damaged_tile_record_is_discarded_in_bounded_memory(raster, tmp_path, case):
    content = CRAFTED[case]()
    store, path = store_with(raster, tmp_path / "cache", "t0.npz", content)
    assert store.has(0)
    out, msgs, peak = bad_get(store, path)
    assert out is None, case
    assert len(msgs) == 1 and str(path) in msgs[0] and "\n" not in msgs[0], msgs
    assert peak < 1 << 20, f"{case}: {peak} bytes traced"  # the bomb alone would be 64 MiB (+8x unpacked)
    assert not path.exists() and not store.has(0)
    assert store.get(0) is None  # nothing left to warn about: the tile is simply missing now


def test_a_record_of_a_tile_outside_the_grid_is_discarded(raster, tmp_path):
    store, path = store_with(raster, tmp_path / "cache", f"t{len(GRID)}.npz", record(good_arrays()))
    out, msgs, _ = bad_get(store, path, lambda s: s.get(len(GRID)))
    assert out is None and len(msgs) == 1 and "not in this raster's grid" in msgs[0] and not path.exists()


def test_a_stray_file_in_the_cache_folder_does_not_break_the_next_run(raster, tmp_path):
    store, path = store_with(raster, tmp_path / "cache", "tnotes.npz", b"hello")
    assert len(store) == 0 and path.exists()  # ignored, not int('notes')


def test_good_records_round_trip_without_warnings(raster, tmp_path):
    store = DiskStore(tmp_path / "cache", raster, RUN, grid=GRID)
    last = len(GRID) - 1
    edge = GRID.tiles[last]
    items = {0: sample(invalid=True), 1: sample(n=0), last: sample((edge.height, edge.width), n=2)}
    for i, inst in items.items():
        store.put(i, inst)
    again = DiskStore(tmp_path / "cache", raster, RUN, grid=GRID)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for i, inst in items.items():
            got = again.get(i)
            assert got.shape == inst.shape and np.array_equal(got.boxes, inst.boxes.reshape(-1, 4))
            assert np.array_equal(got.scores, inst.scores)
            assert all(np.array_equal(a, b) for a, b in zip(got.crops, inst.crops))
            assert (got.invalid is None) == (inst.invalid is None)
            if inst.invalid is not None:
                assert np.array_equal(got.invalid, inst.invalid)


def test_a_record_is_checked_against_its_own_tile_shape(raster, tmp_path):
    """Edge tiles are smaller than the tile size here (100 px, tiles 64, overlap 8): a full-size
    record cannot pass for an edge tile's, nor the other way round."""
    assert GRID.tiles[0].width == TILE
    path = tmp_path / "t.npz"
    path.write_bytes(record(good_arrays()))
    assert load_instances(path, (TILE, TILE)).shape == (TILE, TILE)
    with pytest.raises(cache_mod.BadEntry, match="64 x 64 tile, this tile is 64 x 63"):
        load_instances(path, (TILE, TILE - 1))


EMBEDDINGS = {
    "a header claiming 90,000 rows over 4 kB": lambda: npy(np.zeros((2, 512), np.float32)).replace(
        b"(2, 512)", b"(90000, 512)"),
    "a header claiming 1e9 rows": lambda: npy(np.zeros((2, 512), np.float32)).replace(b"(2, 512)",
                                                                                     b"(1000000000, 512)"),
    "a pickle inside": lambda: npy(np.array([{"evil": 1}], dtype=object)),
    "one dimension": lambda: npy(np.zeros(512, np.float32)),
    "integers": lambda: npy(np.zeros((2, 512), np.int64)),
    "NaN": lambda: npy(np.full((2, 512), np.nan, np.float32)),
    "truncated": lambda: npy(np.zeros((2, 512), np.float32))[:-100],
    "random bytes": lambda: np.random.default_rng(4).bytes(5000),
}


@pytest.mark.parametrize("case", list(EMBEDDINGS))
def test_crafted_embeddings_are_discarded_in_bounded_memory(raster, tmp_path, case):
    store, path = store_with(raster, tmp_path / "cache", "e0-clip.npy", EMBEDDINGS[case]())
    out, msgs, peak = bad_get(store, path, lambda s: s.get_embeddings(0, "clip"))
    assert out is None and len(msgs) == 1 and str(path) in msgs[0] and peak < 1 << 20, (msgs, peak)
    assert not path.exists()


def test_good_embeddings_round_trip(raster, tmp_path):
    store = DiskStore(tmp_path / "cache", raster, RUN, grid=GRID)
    emb = np.random.default_rng(0).random((3, 512)).astype(np.float32)
    store.put_embeddings(0, "clip", emb)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.array_equal(DiskStore(tmp_path / "cache", raster, RUN, grid=GRID).get_embeddings(0, "clip"), emb)


# -- the content key ----------------------------------------------------------------------------

def rewrite_middle_keeping_mtime(path: Path) -> None:
    """What ``cp -p`` / ``rsync -t`` / ``touch -r`` leave: other bytes, same size and mtime."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 16] = bytes(b ^ 0xFF for b in data[mid:mid + 16])
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns


@pytest.mark.parametrize("memo", [False, True])
def test_a_rewritten_middle_with_the_mtime_kept_changes_the_key(tmp_path, memo):
    tif = write_raster(tmp_path / "big.tif", size=1500)  # 2.25 MB uncompressed: first/last MiB miss the middle
    memo_file = tmp_path / "memo.json" if memo else None
    before = raster_key(tif, memo_file)
    assert raster_key(tif, memo_file) == before
    rewrite_middle_keeping_mtime(tif)
    assert raster_key(tif, memo_file) != before


def test_a_vrt_whose_source_changed_gets_another_key(tmp_path):
    src = write_raster(tmp_path / "src.tif", size=1500)
    vrt = tmp_path / "v.vrt"
    vrt.write_text('<VRTDataset rasterXSize="1500" rasterYSize="1500"><SRS>EPSG:32633</SRS>'
                   "<GeoTransform>500000, 1, 0, 4500000, 0, -1</GeoTransform>"
                   '<VRTRasterBand dataType="Byte" band="1"><SimpleSource>'
                   '<SourceFilename relativeToVRT="1">src.tif</SourceFilename><SourceBand>1</SourceBand>'
                   "</SimpleSource></VRTRasterBand></VRTDataset>")
    memo = tmp_path / "memo.json"
    before = raster_key(vrt, memo)
    rewrite_middle_keeping_mtime(src)
    assert raster_key(vrt, memo) != before
    write_raster(src, value=9, size=1500)
    assert raster_key(vrt, memo) not in (before,)


def test_the_memo_spares_rehashing_an_unchanged_file(tmp_path, monkeypatch):
    tif = write_raster(tmp_path / "r.tif", size=300)
    memo = tmp_path / "memo.json"
    calls = []
    real = rasterkey._sha256
    monkeypatch.setattr(rasterkey, "_sha256", lambda p: calls.append(p) or real(p))
    key = raster_key(tif, memo)
    assert raster_key(tif, memo) == key and len(calls) == 1  # second run: no rehash
    copy = tmp_path / "copy.tif"
    shutil.copy2(tif, copy)  # same content elsewhere: same key (content, not name)
    assert raster_key(copy, memo) == key


def test_a_crafted_memo_is_ignored(tmp_path):
    tif = write_raster(tmp_path / "r.tif", size=300)
    memo = tmp_path / "memo.json"
    honest = raster_key(tif)
    for junk in (b"\x00\xff not json", b'{"a": 1}', b"[1, 2, 3]"):
        memo.write_bytes(junk)
        assert raster_key(tif, memo) == honest


def test_a_raster_in_a_local_zip_is_keyed_by_the_archive(tmp_path):
    tif = write_raster(tmp_path / "r.tif", size=300)
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(tif, "r.tif")
    key = raster_key(f"/vsizip/{archive}/r.tif")
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(write_raster(tmp_path / "s.tif", value=9, size=300), "r.tif")
    assert raster_key(f"/vsizip/{archive}/r.tif") != key
