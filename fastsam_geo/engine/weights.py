"""Where model weights come from: paths, bare names, the bundled model. Never a download."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError, WeightsNotFoundError

OFFICIAL = {"FastSAM-s.pt", "FastSAM-x.pt"}
BUNDLED = "buildings-nano.pt"
BUNDLED_PATH = Path(__file__).resolve().parents[1] / "data" / BUNDLED
"""The building model that ships inside the package (YOLOv8n-seg, trained by
scripts/train_buildings.py on OpenAerialMap imagery and OpenStreetMap footprints)."""
RELEASES = "https://github.com/ultralytics/assets/releases"


def weights_dirs() -> list[Path]:
    """Folders searched for weights given by bare name, in order.

    ``$FASTSAM_GEO_WEIGHTS`` (if set), the user cache ``~/.cache/fastsam-geo/weights``
    (``$XDG_CACHE_HOME`` honoured), then the current directory.
    """
    dirs = []
    if os.environ.get("FASTSAM_GEO_WEIGHTS"):
        dirs.append(Path(os.environ["FASTSAM_GEO_WEIGHTS"]).expanduser())
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    dirs.append(cache / "fastsam-geo" / "weights")
    dirs.append(Path.cwd())
    return dirs


def resolve_weights(weights: str | os.PathLike) -> Path:
    """The local file for ``weights`` (a path, or a bare name searched in :func:`weights_dirs`)."""
    p = Path(weights).expanduser()
    if p.is_file():
        return p
    if str(weights) in (BUNDLED, BUNDLED.removesuffix(".pt")):
        if not BUNDLED_PATH.is_file():
            raise WeightsNotFoundError(f"the bundled model {BUNDLED_PATH} is missing from this install; "
                                       "reinstall fastsam-geo or pass --model")
        return BUNDLED_PATH
    if p.is_dir():
        raise InputError(f"{weights}: is a folder, not a weights file")
    if len(p.parts) == 1:
        for d in weights_dirs():
            if (d / p.name).is_file():
                return d / p.name
    where = weights_dirs()[0]
    if p.name in OFFICIAL:
        raise WeightsNotFoundError(
            f"model weights {p.name} not found and never downloaded at run time: download "
            f"{p.name} from {RELEASES} and put it in {where} (or pass its path)")
    if len(p.parts) > 1:
        raise WeightsNotFoundError(f"model weights {weights}: no such file")
    raise WeightsNotFoundError(f"model weights {weights} not found (looked in: "
                               f"{', '.join(str(d) for d in weights_dirs())})")


