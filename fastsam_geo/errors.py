"""One exception root for everything fastsam-geo raises on purpose.

Every subclass also inherits the builtin a caller would naturally catch (as rasterio does:
an unreadable raster is an ``OSError``, a bad argument a ``ValueError``), so code that
knows nothing about fastsam-geo still handles our errors sensibly. Messages are one line,
name the offending thing, and say what to do about it; the CLI prints them verbatim.
"""

from __future__ import annotations


class FastSAMGeoError(Exception):
    """Root of all fastsam-geo errors."""


class InputError(FastSAMGeoError, ValueError):
    """An argument or option has a value that cannot work (e.g. ``overlap >= tile_size``)."""


class RasterError(FastSAMGeoError, OSError):
    """The input raster is missing, unreadable, or unusable (e.g. not georeferenced)."""


class CRSError(FastSAMGeoError, ValueError):
    """A coordinate reference system could not be understood or transformed."""


class PromptError(InputError):
    """A prompt is malformed, or lies outside the raster."""


class OutputError(FastSAMGeoError, OSError):
    """The output path cannot be written (unknown format, missing folder, ...)."""


class ModelError(FastSAMGeoError, RuntimeError):
    """A model could not be loaded or run."""


class TileError(ModelError):
    """Segmenting one tile failed (the message names its window); the run stops cleanly."""


class WeightsNotFoundError(ModelError, FileNotFoundError):
    """Model weights are not on this machine (they are never downloaded implicitly)."""


class UntrustedWeightsError(ModelError):
    """Weights refused before they could run code: an official name whose file is not the
    published one (SHA-256 differs from the pin), or a checkpoint that needs more than
    ultralytics' model classes to unpickle while loading is restricted."""


class SegmenterError(FastSAMGeoError, RuntimeError):
    """A segmenter returned something that is not a valid list of MaskSets."""


class EmptyResultError(FastSAMGeoError):
    """The run found no objects and an empty result was not allowed: nothing was written (the
    CLI's exit code 3; ``--allow-empty`` writes the empty layer instead)."""

    exit_code = 3


class EmptyResultWarning(UserWarning):
    """The run finished but found no objects; the output is a valid, empty layer."""


class CacheWarning(UserWarning):
    """A cache entry was damaged or foreign (it is removed and the tile segmented again), or the
    cache cannot be written or keyed (results are kept in memory): the run goes on, correct."""


class UntrustedCheckpointWarning(UserWarning):
    """A checkpoint the user named is about to be unpickled: pickles can run code, so this is a
    one-line notice to load only files you trust (the bundled and official weights, verified by
    pinned digests, load without it)."""


class GsdWarning(UserWarning):
    """The raster's ground sample distance is far outside the model's training range (the line
    names both): the run goes on, but expect fewer and rougher objects."""


class FineTuneWarning(UserWarning):
    """A fine-tuned model scores worse than its base on the run's own validation area."""


class InputWarning(UserWarning):
    """Part of an input was set aside or could not mean what it seems (the line says what and
    how many): the run goes on with the rest."""


class LeftoverFilesWarning(UserWarning):
    """Temporary files of a killed run were found beside an output (removed, or left to remove)."""


class Cancelled(FastSAMGeoError):
    """The run was cancelled through its progress callback (e.g. a QGIS task's cancel)."""
