"""FastSAM inference: the only module that imports torch and ultralytics (lazily, on first use).

:class:`FastSAMSegmenter` runs a YOLOv8-seg network (FastSAM-s/-x or any ultralytics
segmentation checkpoint, such as the bundled building model) in *everything* mode on
batches of tile images and returns :class:`~fastsam_geo.types.Instances` at each tile's
native resolution. Post-processing is lean: top-k by score before NMS, and masks assembled
from the prototypes only inside each surviving box, directly at native resolution (no
full-frame upsampling of every candidate, which is what makes stock pipelines slow).

Weights are never downloaded here: a name such as ``FastSAM-s.pt`` is looked up in the
weights folders (:func:`weights_dirs`), checked against its pinned SHA-256, and a missing or
altered file is one clear error line; a checkpoint named by path is code and loads as
:mod:`.weights` says (a notice, restricted unpickling unless trusted).
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ModelError
from ..masks import FLAT_STD, featureless, merge_overlapping
from ..types import Instances
from ._torch import _torch, pick_device, release_freed_memory, torch_threads
from .weights import load_model, locate_weights

SHARPEN_SIGMA = 2.0
"""Gaussian sigma (network input pixels) of the unsharp mask ``sharpen`` applies."""


@dataclass
class Prepared:
    """A letterboxed batch on the device, with each image's ``(scale, pad_x, pad_y)`` and size."""

    tensor: Any
    geo: list[tuple[float, float, float]]
    shapes: list[tuple[int, int]]
    greys: list[np.ndarray | None]  # each image in grey (H, W) uint8: what featureless masks are judged on


@dataclass
class Raw:
    """Network output for a batch: ``preds`` ``(B, 4 + nc + nm, A)``, ``protos`` ``(B, nm, S/4, S/4)``."""

    preds: Any
    protos: Any
    geo: list[tuple[float, float, float]]
    shapes: list[tuple[int, int]]
    greys: list[np.ndarray | None]


class FastSAMSegmenter:
    """Everything-mode FastSAM (or any YOLOv8-seg checkpoint) as a fastsam-geo segmenter.

    Parameters
    ----------
    weights: path or official name (``FastSAM-s.pt``, ``FastSAM-x.pt``) of a checkpoint.
    device: ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
    imgsz: network input size (the long side of each tile is resized to it).
        ``None``: the checkpoint's own (``fastsam_geo`` metadata, else its training size).
    conf, iou: confidence threshold and NMS IoU (FastSAM's defaults 0.4 / 0.9 when the
        checkpoint does not recommend its own).
    max_det: most masks kept per tile. ``batch_size``: tiles per forward pass
        (``None``: from device memory on CUDA, 1 on CPU). ``threads``: torch CPU threads during
        this segmenter's calls only (``None``: the process's own count, torch's default being
        the physical cores); the host process's setting is restored after each call.
    tta: test-time augmentation: also run each tile flipped left-right and up-down, and keep
        the best of overlapping detections (3x the network time; finds objects one view misses).
    trust: for a checkpoint you name by path (not the bundled or a digest-verified official
        one): ``True`` unpickles it fully, which runs any code it holds; ``False`` restricts
        unpickling to ultralytics' model classes; ``None`` (default): restricted unless
        ``FASTSAM_GEO_TRUST_WEIGHTS=1``. Either way a one-line ``UntrustedCheckpointWarning``.
    upsample: how a tile smaller than the input is enlarged: ``"linear"`` (bilinear) or
        ``"cubic"`` (bicubic: sharper; what ``--gsd auto`` uses, since it enlarges coarse
        imagery to the model's GSD). Shrinking is always bilinear.
    sharpen: unsharp-mask amount applied to enlarged tiles after resizing (``out = img + a *
        (img - blur(img))``, Gaussian sigma :data:`SHARPEN_SIGMA` input pixels); 0: none.
        ``--gsd auto`` asks for it on coarse imagery (:func:`fastsam_geo.gsd.coarse_settings`).
    flat_std: masks whose box and a 5-px ring around it vary less than this in the image (grey
        levels, standard deviation) are dropped: no object is visible there, whatever the network
        draws (:func:`~fastsam_geo.masks.featureless`; the bundled model draws roofs on flat white).
        ``None``: the checkpoint's ``flat_std``, else :data:`~fastsam_geo.masks.FLAT_STD`; ``0``: keep all.
    """

    def __init__(self, weights: str | os.PathLike = "FastSAM-s.pt", *, device: str = "auto",
                 imgsz: int | None = None, conf: float | None = None, iou: float | None = None,
                 max_det: int = 300, batch_size: int | None = None, threads: int | None = None,
                 half: bool | None = None, tta: bool = False, mask_margin: float | None = None,
                 mask_nms: float | None = None, trust: bool | None = None, upsample: str = "linear",
                 flat_std: float | None = None, sharpen: float = 0.0):
        if upsample not in ("linear", "cubic"):
            raise ModelError(f"upsample must be linear or cubic, got {upsample!r}")
        if not (isinstance(sharpen, int | float) and 0.0 <= sharpen <= 3.0):
            raise ModelError(f"sharpen must be a number in [0, 3], got {sharpen!r}")
        self.upsample = upsample
        self.sharpen = float(sharpen)
        located = locate_weights(weights)  # bundled/official: SHA-256 checked before unpickling
        self.path = located.path
        _torch()
        self.device = pick_device(device)
        if self.device == "cpu":
            self.threads = threads  # applied per call (torch_threads): the count is process-wide
            release_freed_memory()  # opt-in (FASTSAM_GEO_MALLOC=1): it tunes the host's allocator
        else:
            self.threads = None
        # a file the user named: one-line notice, unpickled restricted unless trusted (weights.py)
        model, ckpt = load_model(located, device=self.device, fuse=True, trust=trust)
        if getattr(model, "task", None) != "segment" and not hasattr(model.model[-1], "proto"):
            raise ModelError(f"{self.path}: not a segmentation model (task={getattr(model, 'task', '?')}); "
                             "FastSAM needs a YOLOv8-seg checkpoint")
        meta = ckpt.get("fastsam_geo", {}) if isinstance(ckpt, dict) else {}
        train_args = ckpt.get("train_args", {}) if isinstance(ckpt, dict) else {}
        self.meta: dict[str, Any] = dict(meta)
        self.imgsz = int(imgsz or meta.get("imgsz") or train_args.get("imgsz") or 1024)
        self.conf = float(conf if conf is not None else meta.get("conf", 0.4))
        self.iou = float(iou if iou is not None else meta.get("iou", 0.9))
        self.max_det = int(max_det)
        self.tta = bool(tta)
        self.mask_margin = float(mask_margin if mask_margin is not None else meta.get("mask_margin", 0.0))
        self.mask_nms = float(mask_nms if mask_nms is not None else meta.get("mask_nms", 0.0))
        self.flat_std = float(flat_std if flat_std is not None else meta.get("flat_std", FLAT_STD))
        self.stride = int(max(model.stride)) if hasattr(model, "stride") else 32
        self.imgsz = int(math.ceil(self.imgsz / self.stride) * self.stride)
        self.half = (self.device.startswith("cuda")) if half is None else bool(half)
        self.model = model.half() if self.half else model.float()
        self.nc = len(getattr(model, "names", {0: "object"}))
        self.batch_size = batch_size or self._default_batch()
        self.cache_key = self._cache_key()

    # -- public -----------------------------------------------------------------------------

    def __call__(self, images: list[np.ndarray]) -> list[Instances]:
        out: list[Instances] = []
        with torch_threads(self.threads):
            for i in range(0, len(images), self.batch_size):
                out.extend(self.decode(self.infer(self.prepare(images[i:i + self.batch_size]))))
        return out

    def __repr__(self) -> str:
        return (f"FastSAMSegmenter({self.path.name!r}, device={self.device!r}, imgsz={self.imgsz}, "
                f"conf={self.conf}, iou={self.iou})")

    # The three stages, so a pipeline can overlap them: prepare the next batch and decode the
    # previous one while the network runs (``__call__`` simply chains them).

    def prepare(self, images: Sequence[np.ndarray]) -> Prepared:
        """Letterbox ``(H, W, 3) uint8`` RGB images into one ``(B, 3, S, S)`` tensor on the device
        (``(3B, 3, S, S)`` with ``tta``: each image, then all flipped left-right, then up-down)."""
        greys = self._greys(images)
        if self.tta:
            images = list(images) + [im[:, ::-1] for im in images] + [im[::-1] for im in images]
            greys = greys + [None if g is None else g[:, ::-1] for g in greys] + \
                [None if g is None else g[::-1] for g in greys]
        x, geo = self.preprocess(images)
        return Prepared(x, geo, [im.shape[:2] for im in images], greys)

    def infer(self, prepared: Prepared) -> Raw:
        """The network on a prepared batch (halved and retried on CUDA out-of-memory)."""
        torch = _torch()
        try:
            with torch_threads(self.threads), torch.inference_mode():
                preds, protos = self.model(prepared.tensor)[0]
            return Raw(preds, protos, prepared.geo, prepared.shapes, prepared.greys)
        except torch.cuda.OutOfMemoryError:
            n = prepared.tensor.shape[0]
            if n == 1:
                raise ModelError("out of GPU memory on a single tile; use a smaller --tile-size "
                                 "or --device cpu") from None
            torch.cuda.empty_cache()
            self.batch_size = max(1, n // 2)
            h = n // 2
            a = self.infer(Prepared(prepared.tensor[:h], prepared.geo[:h], prepared.shapes[:h], prepared.greys[:h]))
            b = self.infer(Prepared(prepared.tensor[h:], prepared.geo[h:], prepared.shapes[h:], prepared.greys[h:]))
            return Raw(torch.cat([a.preds, b.preds]), torch.cat([a.protos, b.protos]), a.geo + b.geo,
                       a.shapes + b.shapes, a.greys + b.greys)

    def decode(self, raw: Raw) -> list[Instances]:
        """Network output -> native-resolution :class:`Instances`, one per image."""
        torch = _torch()
        with torch_threads(self.threads), torch.inference_mode():
            out = [self._postprocess(raw.preds[i], raw.protos[i], raw.shapes[i], raw.geo[i], grey=raw.greys[i])
                   for i in range(len(raw.shapes))]
        if not self.tta:
            return out
        n = len(out) // 3
        return [self._fuse([out[i], _flip(out[n + i], 1), _flip(out[2 * n + i], 0)]) for i in range(n)]

    def probability(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Per-pixel mask probability of each ``(H, W, 3) uint8`` image: ``(H, W)`` float32 in
        [0, 1], the highest ``sigmoid(logit)`` of any detected mask inside its box, at native
        resolution (0 outside every box). Candidates as for :meth:`__call__` (``tta`` is not used)."""
        out: list[np.ndarray] = []
        torch = _torch()
        with torch_threads(self.threads):
            for i in range(0, len(images), self.batch_size):
                batch = list(images[i:i + self.batch_size])
                x, geo = self.preprocess(batch)
                raw = self.infer(Prepared(x, geo, [im.shape[:2] for im in batch], self._greys(batch)))
                with torch.inference_mode():
                    for k in range(len(batch)):
                        prob = np.zeros(raw.shapes[k], np.float32)
                        self._postprocess(raw.preds[k], raw.protos[k], raw.shapes[k], raw.geo[k], prob=prob,
                                          grey=raw.greys[k])
                        out.append(prob)
        return out

    def _greys(self, images: Sequence[np.ndarray]) -> list[np.ndarray | None]:
        """Each image in grey, ``(H, W)`` uint8, for the featureless filter (``None`` when it is off)."""
        import cv2

        return [cv2.cvtColor(np.ascontiguousarray(im), cv2.COLOR_RGB2GRAY) if self.flat_std > 0 else None
                for im in images]

    def _fuse(self, views: list[Instances]) -> Instances:
        """Detections of several views of one tile -> one set: NMS by box IoU across views."""
        import torchvision

        torch = _torch()
        boxes = np.concatenate([v.boxes for v in views]).astype(np.float32)
        scores = np.concatenate([v.scores for v in views])
        quality = np.concatenate([v.qualities for v in views])
        crops = [c for v in views for c in v.crops]
        if len(crops) == 0:
            return views[0]
        tb = torch.from_numpy(boxes)
        # a detection counts when it is seen in at least two views (box IoU >= 0.5): votes
        # remove the view-specific false positives that make plain union-of-views worse
        view = np.concatenate([np.full(len(v), k) for k, v in enumerate(views)])
        iou = torchvision.ops.box_iou(tb, tb).numpy() >= 0.5
        votes = np.array([len(set(view[iou[i]])) for i in range(len(boxes))])
        cand = np.flatnonzero(votes >= 2)
        if len(cand) == 0:
            return Instances.empty(views[0].shape)
        keep = _nms(tb[cand], torch.from_numpy(scores[cand]), self.iou, self.max_det).numpy()
        keep = cand[keep]
        return Instances(boxes[keep].astype(np.int32), scores[keep], tuple(crops[k] for k in keep), views[0].shape,
                         quality=quality[keep])

    def forward(self, batch: Any) -> Any:
        """The bare network on a preprocessed ``(B, 3, S, S)`` tensor (for benchmarks)."""
        torch = _torch()
        with torch_threads(self.threads), torch.inference_mode():
            return self.model(batch)

    def preprocess(self, images: Sequence[np.ndarray]) -> tuple[Any, list[tuple[float, float, float]]]:
        """Letterbox ``(H, W, 3) uint8`` RGB images into one ``(B, 3, S, S)`` tensor.

        Returns the tensor and, per image, ``(scale, pad_x, pad_y)`` mapping native tile
        pixels to network input pixels: ``x_in = x * scale + pad_x``.
        """
        import cv2

        torch = _torch()
        s = self.imgsz
        batch = np.full((len(images), s, s, 3), 114, dtype=np.uint8)
        geo = []
        for i, img in enumerate(images):
            h, w = img.shape[:2]
            r = s / max(h, w)
            nh, nw = min(s, round(h * r)), min(s, round(w * r))
            how = cv2.INTER_CUBIC if self.upsample == "cubic" and r > 1 else cv2.INTER_LINEAR
            resized = img if (nh, nw) == (h, w) else cv2.resize(img, (nw, nh), interpolation=how)
            if self.sharpen and r > 1:  # enlarged: give back some of the edge contrast it lost
                blur = cv2.GaussianBlur(resized, (0, 0), SHARPEN_SIGMA)
                resized = cv2.addWeighted(resized, 1 + self.sharpen, blur, -self.sharpen, 0)  # saturates
            py, px = (s - nh) // 2, (s - nw) // 2
            batch[i, py:py + nh, px:px + nw] = resized
            geo.append((r, float(px), float(py)))
        t = torch.from_numpy(batch).to(self.device, non_blocking=True).permute(0, 3, 1, 2)
        t = t.half() if self.half else t.float()
        return t.div_(255.0), geo

    # -- internals ----------------------------------------------------------------------------

    def _postprocess(self, pred: Any, proto: Any, shape: tuple[int, int],
                     geo: tuple[float, float, float], prob: np.ndarray | None = None,
                     grey: np.ndarray | None = None) -> Instances:
        """Detections of one image -> native-resolution instances.

        ``pred``: ``(4 + nc + nm, A)`` raw head output (xywh in input pixels, class scores,
        mask coefficients); ``proto``: ``(nm, S/4, S/4)`` mask prototypes. Each instance's
        ``quality`` is its stability score (:func:`stability`, from its logits in its box). With
        ``prob`` (``shape`` float32), each mask's ``sigmoid(logits)`` is max-ed into it in its box.
        With ``grey`` (the image, ``shape`` uint8), boxes over one flat tone are dropped before their
        masks are computed (:func:`~fastsam_geo.masks.featureless`, ``flat_std``).
        """
        torch = _torch()
        h, w = shape
        nc = self.nc
        scores = pred[4:4 + nc].amax(0)
        keep = scores > self.conf
        if not keep.any():
            return Instances.empty(shape)
        cand = pred[:, keep].T.float()  # (K, 4 + nc + nm)
        sc = scores[keep].float()
        k = min(len(sc), 10 * self.max_det)  # top-k before NMS: NMS cost grows with k^2
        sc, order = sc.topk(k)
        cand = cand[order]
        xy, wh = cand[:, :2], cand[:, 2:4]
        boxes = torch.cat([xy - wh / 2, xy + wh / 2], 1)
        keep = _nms(boxes, sc, self.iou, self.max_det)
        boxes, sc, coef = boxes[keep], sc[keep], cand[keep, 4 + nc:]
        # back to native tile pixels
        r, px, py = geo
        nboxes = (boxes - torch.tensor([px, py, px, py], device=boxes.device)) / r
        if self.mask_margin > 0:  # let masks reach past their box (no straight cuts at box edges)
            grow = (nboxes[:, 2:] - nboxes[:, :2]) * self.mask_margin
            nboxes = torch.cat([nboxes[:, :2] - grow, nboxes[:, 2:] + grow], 1)
        nboxes[:, 0::2] = nboxes[:, 0::2].clamp(0, w)
        nboxes[:, 1::2] = nboxes[:, 1::2].clamp(0, h)
        ib = torch.stack([nboxes[:, 0].floor(), nboxes[:, 1].floor(),
                          nboxes[:, 2].ceil(), nboxes[:, 3].ceil()], 1).long().cpu().numpy()
        flat = featureless(ib, grey, self.flat_std) if grey is not None else np.zeros(len(ib), bool)
        nm, ph, pw = proto.shape
        proto = proto.float()
        stride = self.imgsz / ph  # input pixels per prototype pixel (4 for YOLOv8-seg)
        crops, out_boxes, out_scores, out_quality = [], [], [], []
        on_cpu = proto.device.type == "cpu"
        if on_cpu:  # numpy + OpenCV: no per-op torch overhead for hundreds of small masks
            # prototypes channels-last (ph, pw, nm): a free view of the network's own layout on
            # CPU, where slicing a box's window needs no copy (the (nm, ph, pw) slice did)
            coef_np = coef.numpy()
            proto_np = np.ascontiguousarray(proto.numpy().transpose(1, 2, 0))
        for i, (x0, y0, x1, y1) in enumerate(ib.tolist()):
            if x1 <= x0 or y1 <= y0 or flat[i]:
                continue
            if on_cpu:
                logits = _box_logits_cv2(coef_np[i], proto_np, (x0, y0, x1, y1), r, px, py, stride)
                m = logits > 0
                q = stability(logits)
                if prob is not None:
                    np.maximum(prob[y0:y1, x0:x1], _sigmoid(logits), out=prob[y0:y1, x0:x1])
            else:
                ry, ys = _interp_weights(y0, y1, r, py, stride, ph, proto.device)
                rx, xs = _interp_weights(x0, x1, r, px, stride, pw, proto.device)
                # the mask's logits on the prototype pixels under its box only, then up to native pixels
                crop = proto[:, ys[0]:ys[1], xs[0]:xs[1]]
                logits = (coef[i] @ crop.reshape(nm, -1)).view(crop.shape[1:])
                up = ry @ logits @ rx.T
                m = (up > 0).cpu().numpy()
                hi, lo = int((up > STABILITY_OFFSET).sum()), int((up > -STABILITY_OFFSET).sum())
                q = hi / lo if lo else 0.0
                if prob is not None:
                    np.maximum(prob[y0:y1, x0:x1], up.sigmoid().cpu().numpy(), out=prob[y0:y1, x0:x1])
            crops.append(m)
            out_boxes.append((x0, y0, x1, y1))
            out_scores.append(float(sc[i]))
            out_quality.append(q)
        if not crops:
            return Instances.empty(shape)
        inst = Instances(np.asarray(out_boxes, np.int32), np.asarray(out_scores, np.float32), tuple(crops), shape,
                         quality=np.asarray(out_quality, np.float32))
        return merge_overlapping(inst, self.mask_nms) if self.mask_nms > 0 else inst

    def _default_batch(self) -> int:
        if not self.device.startswith("cuda"):
            # CPU: a batch of 2 is ~10 % faster per tile than 1 (FastSAM-s, 1024², 2 cores)
            # but holds ~300 MB more activations: memory first; --batch-size 2 for the speed
            return 1
        torch = _torch()
        free, _ = torch.cuda.mem_get_info(torch.device(self.device))
        per_tile = (self.imgsz / 1024) ** 2 * (1.5e9 if self.half else 3e9)
        return int(max(1, min(16, free * 0.6 // per_tile)))

    def _cache_key(self) -> str:
        """Weights and every setting that changes the masks (not device, batch or threads)."""
        st = self.path.stat()
        h = hashlib.sha1(f"{self.path.name}:{st.st_size}".encode())
        with open(self.path, "rb") as f:
            h.update(f.read(1 << 20))
        return (f"{h.hexdigest()[:16]}-s{self.imgsz}-c{self.conf:g}-i{self.iou:g}-m{self.max_det}"
                f"-h{int(self.half)}-t{int(self.tta)}-g{self.mask_margin:g}-n{self.mask_nms:g}-f{self.flat_std:g}"
                + ("-ucubic" if self.upsample == "cubic" else "") + (f"-p{self.sharpen:g}" if self.sharpen else ""))




STABILITY_OFFSET = 1.0
"""Logit offset of the stability score (SAM's ``stability_score_offset``): a mask's quality is
the IoU of its pixels with logit > +1 and > -1 (sigmoid 0.73 and 0.27 around the 0.5 cut-off)."""


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (0.5 * (1.0 + np.tanh(0.5 * x))).astype(np.float32, copy=False)


def stability(logits: np.ndarray, offset: float = STABILITY_OFFSET) -> float:
    """SAM's stability score of one mask from its native-resolution ``logits`` (any shape, float):
    ``|logits > offset| / |logits > -offset|``, in [0, 1] (1: a crisp mask whose outline does not move
    when the cut-off does; near 0: a soft blob). 0 when no pixel passes ``-offset``."""
    lo = int(np.count_nonzero(logits > -offset))
    return int(np.count_nonzero(logits > offset)) / lo if lo else 0.0


def _box_logits_cv2(coef: np.ndarray, proto: np.ndarray, box: tuple[int, int, int, int], scale: float, px: float,
                    py: float, stride: float) -> np.ndarray:
    """One mask's logits inside its native-pixel ``box``: logits on the prototype pixels under the box,
    bilinearly resampled to native pixels by one ``cv2.warpAffine`` (borders replicated: the
    same sampling as :func:`_interp_weights`, to OpenCV's 1/32-pixel interpolation grid).
    ``coef``: ``(nm,)``; ``proto``: ``(ph, pw, nm)`` float32, channels last (a window of it is
    a strided view, no copy). Returns ``(y1 - y0, x1 - x0)`` float32 logits (the mask is ``> 0``).
    """
    import cv2

    x0, y0, x1, y1 = box
    ph, pw = proto.shape[:2]
    qx0 = ((x0 + 0.5) * scale + px) / stride - 0.5  # prototype coordinate of the first native pixel
    qy0 = ((y0 + 0.5) * scale + py) / stride - 0.5
    qx1 = ((x1 - 0.5) * scale + px) / stride - 0.5
    qy1 = ((y1 - 0.5) * scale + py) / stride - 0.5
    lx, hx = max(0, min(pw - 1, math.floor(qx0))), max(1, min(pw, math.floor(qx1) + 2))
    ly, hy = max(0, min(ph - 1, math.floor(qy0))), max(1, min(ph, math.floor(qy1) + 2))
    logits = (proto[ly:hy, lx:hx] @ coef).astype(np.float32, copy=False)  # (hy - ly, hx - lx)
    a = scale / stride
    m = np.array([[a, 0.0, qx0 - lx], [0.0, a, qy0 - ly]], dtype=np.float64)
    up = cv2.warpAffine(logits, m, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                        borderMode=cv2.BORDER_REPLICATE)
    return up


def _box_mask_cv2(coef: np.ndarray, proto: np.ndarray, box: tuple[int, int, int, int], scale: float, px: float,
                  py: float, stride: float) -> np.ndarray:
    """:func:`_box_logits_cv2` thresholded at 0: ``(y1 - y0, x1 - x0)`` bool."""
    return _box_logits_cv2(coef, proto, box, scale, px, py, stride) > 0


def _nms(boxes: Any, scores: Any, iou: float, max_det: int = 0) -> Any:
    """Greedy NMS, indices by decreasing score, the first ``max_det`` (0: all). On CPU OpenCV's
    (same result as torchvision's, tested; importing torchvision costs ~1.3 s a process; its
    ``top_k`` cuts candidates *before* NMS, so it is not used); elsewhere torchvision's."""
    torch = _torch()
    if boxes.device.type == "cpu":
        import cv2

        b = boxes.numpy().astype(np.float64)
        b[:, 2:] -= b[:, :2]  # x0, y0, w, h
        keep = cv2.dnn.NMSBoxes(b, scores.numpy().astype(np.float32), 0.0, float(iou))
        keep = torch.from_numpy(np.asarray(keep, dtype=np.int64).reshape(-1))
    else:
        import torchvision

        keep = torchvision.ops.nms(boxes, scores, iou)
    return keep[:max_det] if max_det > 0 else keep


def _interp_weights(a: int, b: int, scale: float, pad: float, stride: float, size: int, device):
    """Bilinear weights mapping prototype pixels to native pixels ``a..b-1`` along one axis.

    Native pixel centre ``u + 0.5`` sits at input pixel ``(u + 0.5) * scale + pad`` and at
    prototype coordinate ``that / stride - 0.5`` (align_corners=False, borders clamped): the
    same sampling as upsampling the whole prototype map and cropping, done for the box only.
    Returns ``(W, (lo, hi))``: ``W`` is ``(b - a, hi - lo)`` over prototype rows ``lo..hi-1``.
    """
    torch = _torch()
    u = torch.arange(a, b, device=device, dtype=torch.float32)
    q = ((u + 0.5) * scale + pad) / stride - 0.5
    q = q.clamp(0, size - 1)
    q0 = q.floor().long()
    q1 = (q0 + 1).clamp(max=size - 1)
    w1 = q - q0.float()
    lo, hi = int(q0.min()), int(q1.max()) + 1
    weights = torch.zeros((b - a, hi - lo), device=device)
    rows = torch.arange(b - a, device=device)
    weights.index_put_((rows, q0 - lo), 1 - w1, accumulate=True)
    weights.index_put_((rows, q1 - lo), w1, accumulate=True)
    return weights, (lo, hi)


def _flip(inst: Instances, axis: int) -> Instances:
    """Instances of a flipped image mapped back: ``axis`` 1 = left-right, 0 = up-down."""
    h, w = inst.shape
    b = inst.boxes.copy()
    if axis == 1:
        b[:, [0, 2]] = w - inst.boxes[:, [2, 0]]
    else:
        b[:, [1, 3]] = h - inst.boxes[:, [3, 1]]
    return Instances(b, inst.scores, tuple(np.flip(c, axis) for c in inst.crops), inst.shape, quality=inst.quality)
