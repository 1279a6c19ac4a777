"""Where model weights come from, and whether they may run: a checkpoint is a pickle, so code.

What a name means is decided by the name alone, never by what happens to lie in the current
folder (a ``buildings-nano.pt`` or ``FastSAM-s.pt`` planted there must not replace the model a
run asks for, nor run its pickle):

* the bundled model (``buildings-nano``, ``buildings-nano.pt``) is always the file inside the
  package, and its SHA-256 must equal :data:`BUNDLED_SHA256`;
* an official name (``FastSAM-s.pt``, ``FastSAM-x.pt``) is looked up only in the weights
  folders (:func:`weights_dirs`: ``$FASTSAM_GEO_WEIGHTS``, then the user cache), never in the
  current folder and never downloaded, and its SHA-256 must be one pinned in
  :data:`OFFICIAL_SHA256`;
* anything else is a file the user named (a path, or a bare name found in the current folder or
  the weights folders). It loads after a one-line :class:`UntrustedCheckpointWarning`, and is
  unpickled restricted to ultralytics' model classes (``torch.load(weights_only=True)`` with
  ultralytics' allow-list) unless the caller trusts it (``trust=True`` or
  ``FASTSAM_GEO_TRUST_WEIGHTS=1``).

Verified files (bundled, official) unpickle fully: their digest is the trust check. Locating and
verifying import no torch (:func:`locate_weights` runs before any tile is read); only
:func:`load_model` does.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..errors import InputError, ModelError, UntrustedCheckpointWarning, UntrustedWeightsError, WeightsNotFoundError

BUNDLED = "buildings-nano.pt"
BUNDLED_NAMES = frozenset({BUNDLED, BUNDLED.removesuffix(".pt")})
BUNDLED_PATH = Path(__file__).resolve().parents[1] / "data" / BUNDLED
"""The building model that ships inside the package (YOLOv8n-seg, trained by
scripts/train_buildings.py on OpenAerialMap imagery and OpenStreetMap footprints)."""
BUNDLED_SHA256 = "f50e5f5bd4808ca74ec482c2c6784c649fc50137ef01ff2d4ba34d6adc321a06"
"""SHA-256 of :data:`BUNDLED_PATH`. Retraining the model means updating this pin (a test
compares the two, so a model shipped without its pin fails CI, not users)."""

OFFICIAL_SHA256: Mapping[str, frozenset[str]] = MappingProxyType({
    # The FastSAM authors' published files (CASIA-IVA-Lab/FastSAM "Model Checkpoints"):
    # FastSAM-s.pt, 23,832,055 bytes; FastSAM-x.pt is their FastSAM.pt, 144,943,063 bytes (the
    # same file in their Hugging Face demo Space, An-619/FastSAM, checkpoints/FastSAM.pt).
    # An empty set means "not verifiable": refused by name, loadable by path.
    "FastSAM-s.pt": frozenset({"e9034d7478a8e9d1bfb57b51592e521a253287c7cdcf79258f61ea6d68584a0d"}),
    "FastSAM-x.pt": frozenset({"c0be4e7ddbe4c15333d15a859c676d053c486d0a746a3be6a7a9790d52a9b6d7"}),
})
OFFICIAL = frozenset(OFFICIAL_SHA256)
RELEASES = "https://github.com/CASIA-IVA-Lab/FastSAM#model-checkpoints"
TRUST_ENV = "FASTSAM_GEO_TRUST_WEIGHTS"


@dataclass(frozen=True)
class Weights:
    """A located weights file and why it may be loaded.

    ``kind``: ``"bundled"`` or ``"official"`` (``sha256`` matched a pin: unpickled fully), or
    ``"explicit"`` (a file the user named: a notice, and restricted unpickling unless trusted).
    """

    path: Path
    kind: str
    sha256: str | None = None

    @property
    def verified(self) -> bool:
        return self.kind != "explicit"


def weights_dirs() -> list[Path]:
    """Folders searched for official weights (and other bare names not in the current folder).

    ``$FASTSAM_GEO_WEIGHTS`` (if set), then the user cache ``~/.cache/fastsam-geo/weights``
    (``$XDG_CACHE_HOME`` honoured). Never the current folder: a file planted there must not
    stand in for an official model.
    """
    dirs = []
    if os.environ.get("FASTSAM_GEO_WEIGHTS"):
        dirs.append(Path(os.environ["FASTSAM_GEO_WEIGHTS"]).expanduser())
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    dirs.append(cache / "fastsam-geo" / "weights")
    return dirs


def resolve_weights(weights: str | os.PathLike) -> Path:
    """The verified or user-named local file for ``weights`` (see :func:`locate_weights`)."""
    return locate_weights(weights).path


def locate_weights(weights: str | os.PathLike) -> Weights:
    """Find the file ``weights`` names, verifying bundled and official files by SHA-256.

    Raises :class:`WeightsNotFoundError` (not on disk), :class:`UntrustedWeightsError` (an
    official or bundled file whose digest is not the pinned one) or :class:`InputError` (a folder).
    """
    raw = os.fspath(weights)
    if not _has_folder(raw) and raw in BUNDLED_NAMES:
        return _bundled()
    if not _has_folder(raw) and raw in OFFICIAL_SHA256:
        return _official(raw)
    return _explicit(raw)


def _has_folder(raw: str) -> bool:
    """Whether a spec names a place (``./x.pt``, ``~/x.pt``, ``/abs/x.pt``), not just a name."""
    return bool(os.path.dirname(raw)) or raw.startswith("~")


def _bundled() -> Weights:
    if not BUNDLED_PATH.is_file():
        raise WeightsNotFoundError(f"the bundled model {BUNDLED_PATH} is missing from this install; "
                                   "reinstall fastsam-geo or pass --model")
    digest = sha256_of(BUNDLED_PATH)
    if digest != BUNDLED_SHA256:
        raise UntrustedWeightsError(f"{BUNDLED_PATH}: SHA-256 {digest} is not the bundled model's pinned "
                                    f"{BUNDLED_SHA256}; refused, nothing was loaded: reinstall fastsam-geo")
    return Weights(BUNDLED_PATH, "bundled", digest)


def _official(name: str) -> Weights:
    for d in weights_dirs():
        if (d / name).is_file():
            return Weights(d / name, "official", _verify_official(d / name))
    here = " (a copy in the current folder is never used by name: pass ./" + name + " to load it as your own)"
    raise WeightsNotFoundError(
        f"model weights {name} not found and never downloaded at run time: download {name} from {RELEASES} "
        f"and put it in {weights_dirs()[0]} (or pass its path){here if Path(name).is_file() else ''}")


def _verify_official(path: Path) -> str:
    """``path``'s digest, if it is one pinned for its name; else refuse before unpickling."""
    pins = OFFICIAL_SHA256[path.name]
    if not pins:
        raise UntrustedWeightsError(f"{path}: no SHA-256 is pinned for {path.name} in this fastsam-geo, so it "
                                    f"cannot be verified; pass its path instead to load it as your own checkpoint")
    digest = sha256_of(path)
    if digest not in pins:
        raise UntrustedWeightsError(
            f"{path}: SHA-256 {digest} is not the published {path.name} ({' or '.join(sorted(pins))}); refused, "
            f"nothing was loaded: replace it with the file from {RELEASES}, or pass its path to load it as your own")
    return digest


def _explicit(raw: str) -> Weights:
    p = Path(raw).expanduser()
    if p.is_dir():
        raise InputError(f"{raw}: is a folder, not a weights file")
    if p.is_file():
        return Weights(p, "explicit")
    if _has_folder(raw):
        raise WeightsNotFoundError(f"model weights {raw}: no such file")
    for d in weights_dirs():
        if (d / p.name).is_file():
            return Weights(d / p.name, "explicit")
    raise WeightsNotFoundError(f"model weights {raw} not found (looked in: the current folder, "
                               f"{', '.join(str(d) for d in weights_dirs())})")


@dataclass(frozen=True)
class _Stamp:
    """What identifies a file's contents without reading them: replacing the file (a rename, a
    rewrite, even one that restores size and mtime) changes the inode or ctime."""

    path: str
    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    device: int


_DIGESTS: dict[_Stamp, str] = {}
_DIGESTS_LOCK = threading.Lock()


def sha256_of(path: str | os.PathLike) -> str:
    """SHA-256 of a file, read in 1 MiB blocks; cached per process while the file is unchanged,
    so the early check, the cache key and the load hash a 138 MB FastSAM-x once."""
    st = os.stat(path)
    stamp = _Stamp(os.path.realpath(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)
    with _DIGESTS_LOCK:
        if stamp in _DIGESTS:
            return _DIGESTS[stamp]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    with _DIGESTS_LOCK:
        _DIGESTS[stamp] = h.hexdigest()
    return h.hexdigest()


def trusted_by_env() -> bool:
    """Whether ``FASTSAM_GEO_TRUST_WEIGHTS`` asks to unpickle user-named checkpoints fully."""
    return os.environ.get(TRUST_ENV, "").strip().lower() in ("1", "true", "yes")


def restricted(weights: Weights, trust: bool | None = None) -> bool:
    """Whether ``weights`` must be unpickled restricted to ultralytics' model classes: a file the
    user named, unless the caller (``trust``) or ``FASTSAM_GEO_TRUST_WEIGHTS=1`` vouches for it."""
    return not weights.verified and not (trusted_by_env() if trust is None else trust)


def notice(path: str | os.PathLike, restricted: bool, *, what: str = "checkpoint") -> None:
    """The one-line warning before a user-named checkpoint (or model yaml) is loaded."""
    if what == "yaml":
        risk = "model yamls can run code (ultralytics evaluates their activation)"
        how = "so it is built from ultralytics' layers without evaluating anything" if restricted else \
            f"and it is trusted ({TRUST_ENV}=1 or trust=True), so it is built as ultralytics does"
    else:
        risk = "model checkpoints are Python pickles that can run code"
        how = "so it is unpickled restricted to ultralytics' model classes" if restricted else \
            f"and it is trusted ({TRUST_ENV}=1 or trust=True), so it is unpickled fully"
    warnings.warn(f"{path}: {risk}, {how}; load only files you trust", UntrustedCheckpointWarning, stacklevel=3)


def load_model(weights: Weights, *, device: str = "cpu", fuse: bool = True,
               trust: bool | None = None) -> tuple[Any, dict]:
    """Unpickle ``weights`` as its kind allows; return ``(model in eval mode on device, checkpoint)``.

    ``trust``: for a user-named file, ``True`` unpickles it fully, ``False`` restricted, ``None``
    as ``FASTSAM_GEO_TRUST_WEIGHTS`` says (restricted by default).
    """
    from ._torch import _quiet_ultralytics

    safe = restricted(weights, trust)
    if not weights.verified:
        notice(weights.path, safe)
    with _quiet_ultralytics():  # no model summaries on stdout
        ckpt = _unpickle(weights.path, safe)
        return _model_from(ckpt, weights.path, device, fuse), ckpt


def _unpickle(path: Path, safe: bool) -> dict:
    """ultralytics' checkpoint reader, with ``weights_only`` and its allow-list when ``safe``."""
    from ultralytics.nn.tasks import torch_safe_load

    if safe:
        require_restricted(path)
    try:
        ckpt, _ = torch_safe_load(str(path.resolve()), safe_only=safe)
    except Exception as exc:  # corrupt file, wrong format, a global outside the allow-list...
        raise load_error(path, exc, safe) from exc
    return ckpt


def require_restricted(path: str | os.PathLike) -> None:
    """Refuse when this torch cannot unpickle restricted: ultralytics would then quietly load
    the file fully (its allow-list needs ``torch.serialization.get_unsafe_globals_in_checkpoint``)."""
    from ._torch import _torch

    torch = _torch()
    if not hasattr(torch.serialization, "get_unsafe_globals_in_checkpoint"):
        raise UntrustedWeightsError(f"{path}: restricted unpickling needs torch>=2.6 (this is {torch.__version__}); "
                                    f"upgrade torch, or if you trust this file set {TRUST_ENV}=1")


def load_error(path: str | os.PathLike, exc: BaseException, safe: bool) -> ModelError:
    """One line for a checkpoint that did not load: refused by restricted unpickling (and what it
    asked for), or unreadable (corrupt, wrong format)."""
    global_ = _refused_global(exc) if safe else None
    if global_ is not None:
        return UntrustedWeightsError(
            f"{path}: refused to unpickle: it needs {global_}, outside ultralytics' model classes, and could run "
            f"code; if you trust this file, load it fully with {TRUST_ENV}=1 (Python: trust=True)")
    return ModelError(f"{path}: cannot load model weights ({_first_line(exc)})")


def _refused_global(exc: BaseException) -> str | None:
    """What a restricted unpickle refused to build (``posix.system``, ...), or None when the
    file is not a checkpoint at all (weights_only reports both as ``UnpicklingError``)."""
    for e in (exc, exc.__cause__, exc.__context__):
        if isinstance(e, pickle.UnpicklingError):
            m = re.search(r"GLOBAL ([\w.]+)|(getattr\([^)]*\)) blocked", str(e))
            return (m.group(1) or m.group(2)) if m else None
    return None


def _model_from(ckpt: dict, path: Path, device: str, fuse: bool) -> Any:
    """The network in a checkpoint, as ultralytics' ``load_checkpoint`` prepares it (FP32, args,
    task, stride, fused, eval, on ``device``), from an already unpickled checkpoint."""
    from ultralytics.cfg import DEFAULT_CFG_DICT
    from ultralytics.nn.tasks import guess_model_task

    from ._torch import _torch

    torch = _torch()
    model = ckpt.get("ema") or ckpt.get("model")
    if not isinstance(model, torch.nn.Module):
        raise ModelError(f"{path}: cannot load model weights (no model in the checkpoint, found "
                         f"{type(model).__name__}); pass a YOLOv8-seg .pt")
    model = model.float()
    model.args = {**DEFAULT_CFG_DICT, **(ckpt.get("train_args") or {})}
    model.pt_path = str(path)
    model.task = getattr(model, "task", guess_model_task(model))
    if not hasattr(model, "stride"):
        model.stride = torch.tensor([32.0])
    model = (model.fuse() if fuse and hasattr(model, "fuse") else model).eval().to(device)
    for m in model.modules():
        if hasattr(m, "inplace"):
            m.inplace = True
        elif isinstance(m, torch.nn.Upsample) and not hasattr(m, "recompute_scale_factor"):
            m.recompute_scale_factor = None  # torch 1.11 compatibility, as ultralytics does
    return model


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
