"""CLIP embeddings for text prompts, through open_clip (the optional ``[text]`` extra).

Weights are never downloaded: they come from a local file, or from open_clip's / the Hugging
Face cache when already there (``HF_HUB_OFFLINE=1`` is set so nothing is fetched). A spec is
``"MODEL"`` (default pretrained tag, cache only), ``"MODEL:TAG"``, ``"MODEL:/path/weights.bin"``
or ``"MODEL:untrained"`` (random weights; tests and speed measurements).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import ModelError, WeightsNotFoundError
from ._torch import _torch, pick_device

DEFAULT_CLIP = "ViT-B-32:openai"


class ClipEmbedder:
    """Image and text embeddings from an open_clip model, L2-normalised ``(N, D)`` float32."""

    def __init__(self, spec: str = DEFAULT_CLIP, *, device: str = "auto", batch_size: int = 32):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        torch = _torch()
        try:
            import open_clip
        except ImportError:
            raise ModelError("text prompts need open_clip: pip install 'fastsam-geo[text]'") from None
        name, _, weights = spec.partition(":")
        weights = weights or "openai"
        self.device = pick_device(device)
        pretrained = None if weights == "untrained" else weights
        if pretrained and Path(pretrained).expanduser().exists():
            pretrained = str(Path(pretrained).expanduser())
        try:
            with quiet_open_clip(os.path.dirname(open_clip.__file__)):
                model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained,
                                                                             device=self.device)
        except RuntimeError as exc:
            if "download" in str(exc).lower() or "hub" in str(exc).lower():
                raise WeightsNotFoundError(
                    f"CLIP weights {name}:{weights} are not on this machine and are never downloaded at run "
                    f"time: pass text_embedder='{name}:/path/to/open_clip_pytorch_model.bin' (or --clip)") from None
            raise ModelError(f"cannot load CLIP {spec}: {str(exc).splitlines()[0]}") from exc
        except Exception as exc:
            raise ModelError(f"cannot load CLIP {spec}: {str(exc).splitlines()[0] if str(exc) else exc}") from exc
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = open_clip.get_tokenizer(name)
        self.batch_size = batch_size
        self._torch = torch
        h = hashlib.sha1(spec.encode())
        if pretrained and Path(pretrained).exists():
            st = Path(pretrained).stat()
            h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
        self.key = f"clip-{h.hexdigest()[:12]}"

    def embed_images(self, images: list[np.ndarray]) -> np.ndarray:
        """``(H, W, 3) uint8`` RGB crops -> ``(N, D)`` unit vectors."""
        from PIL import Image

        torch = self._torch
        out = []
        with torch.inference_mode():
            for i in range(0, len(images), self.batch_size):
                batch = torch.stack([self.preprocess(Image.fromarray(im)) for im in images[i:i + self.batch_size]])
                out.append(self._unit(self.model.encode_image(batch.to(self.device))))
        return np.concatenate(out) if out else np.zeros((0, 1), np.float32)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            return self._unit(self.model.encode_text(self.tokenizer(list(texts)).to(self.device)))

    @staticmethod
    def _unit(t) -> np.ndarray:
        t = t.float()
        return (t / t.norm(dim=-1, keepdim=True).clamp_min(1e-12)).cpu().numpy().astype(np.float32)


class _DropRecordsFrom(logging.Filter):
    """Drops log records whose source file lies under ``package_dir``; passes every other."""

    def __init__(self, package_dir: str):
        super().__init__()
        self.package_dir = os.path.join(os.path.normcase(os.path.abspath(package_dir)), "")

    def filter(self, record: logging.LogRecord) -> bool:
        return not os.path.normcase(record.pathname).startswith(self.package_dir)


@contextlib.contextmanager
def quiet_open_clip(package_dir: str) -> Iterator[None]:
    """Inside the block, drop the records open_clip's own modules (the files under
    ``package_dir``) log through the root logger; every other record, of any logger or
    thread, passes as before.

    open_clip logs its failed download attempts at ERROR with ``logging.error`` (the root
    logger); the :class:`WeightsNotFoundError` that follows says the same in one line.
    Raising the root logger's level instead would also hide the host's logs (QGIS's, other
    threads') while CLIP loads. A filter on the root logger sees only records logged to it
    directly, which is how open_clip logs, so named loggers are not even consulted.
    """
    root = logging.getLogger()
    drop = _DropRecordsFrom(package_dir)
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)
