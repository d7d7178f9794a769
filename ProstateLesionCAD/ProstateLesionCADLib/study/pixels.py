"""Decoding the pixel data of a DICOM file, in any transfer syntax the installed decoders read.

pydicom decodes native and deflated data and RLE itself, and JPEG 2000 with the declared
pylibjpeg-openjpeg plugin. When pydicom has no working decoder (JPEG lossless and JPEG-LS:
the pylibjpeg plugin for them is GPL-3.0, so it is not a dependency), SimpleITK's GDCM
(bundled with SimpleITK and Slicer) is tried. A file
neither can decode raises `Undecodable`, naming its transfer syntax, so the caller can say
which series cannot be read and why in one sentence.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.uid import UID


class Undecodable(Exception):
    """The pixel data of `path` cannot be decoded; `syntax` is its transfer syntax UID."""

    def __init__(self, path: str, syntax: str, detail: str):
        super().__init__(f"{path}: {detail}")
        self.path, self.syntax, self.detail = path, syntax, detail


def syntax_name(uid: str) -> str:
    """'JPEG 2000 Image Compression (Lossless Only) (1.2.840.10008.1.2.4.90)', or the UID alone."""
    name = UID(uid).name if uid else ""
    return f"{name} ({uid})" if name and name != uid else (uid or "unknown transfer syntax")


def _last_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:160]


def decode_file(path: str) -> tuple[np.ndarray, bool]:
    """All frames of one file as (frames, rows, cols) and whether the rescale is already applied.

    pydicom returns stored values (the caller applies each frame's RescaleSlope/Intercept);
    the GDCM fallback returns rescaled values.
    """
    syntax = ""
    try:
        ds = pydicom.dcmread(path)
        syntax = str(getattr(ds.file_meta, "TransferSyntaxUID", "") or "")
        array = ds.pixel_array
        frames = int(ds.get("NumberOfFrames") or 1)
        if frames == 1 and array.ndim == 2:
            array = array[np.newaxis]
        return array, False
    except Exception as exc:  # no pydicom decoder for this syntax (or a damaged stream): try GDCM
        first = exc
    try:
        image = sitk.ReadImage(path, sitk.sitkFloat32)
    except RuntimeError:
        raise Undecodable(path, syntax, _last_line(first)) from None
    array = sitk.GetArrayFromImage(image)
    return (array if array.ndim == 3 else array[np.newaxis]), True


class FrameCache:
    """Decoded files, most recent first: the volumes of one multi-frame object (its b-values,
    its time points) are read one after the other, so each file is decoded once."""

    def __init__(self, files: int = 2):
        self.files = files
        self._decoded: OrderedDict[str, tuple[np.ndarray, bool]] = OrderedDict()

    def frame(self, path: str, index: int) -> tuple[np.ndarray, bool]:
        if path not in self._decoded:
            self._decoded[path] = decode_file(path)
            while len(self._decoded) > self.files:
                self._decoded.popitem(last=False)
        self._decoded.move_to_end(path)
        array, rescaled = self._decoded[path]
        if index >= array.shape[0]:
            raise Undecodable(path, "", f"frame {index + 1} requested but the pixel data hold {array.shape[0]}")
        return array[index].astype(np.float32), rescaled
