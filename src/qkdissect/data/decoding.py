"""Robust decoding of an image as read (:mod:`.sources`) into upright 8-bit RGB.

- **Decoding** (:func:`decode`): greyscale, palette, RGBA/LA (composited on white), CMYK, 16-bit and float
  images, EXIF rotation, tiny and huge images (over :data:`DRAFT_PIXELS` they are reduced while or right
  after they are decoded; all others in full, as the models' own libraries decode them; over
  :func:`max_pixels`, skipped). A file that cannot be decoded raises :class:`ImageDecodeError`;
  :class:`~qkdissect.data.dataset.ImageDataset` turns that into a skipped item, counted and logged.
"""

from __future__ import annotations

import io
import os
import re

import numpy as np
from PIL import Image, ImageFile, ImageOps

from ..errors import QKDissectError
from .sources import ImageItem, Raw, bundled_array, read_raw

#: decode larger images, but never more than this many pixels (PIL's own guard is 179 M); an image that would be
#: decoded at more pixels is skipped. ``$QKDISSECT_MAX_PIXELS`` sets another limit (lower it to bound memory: an
#: RGB image takes 4 bytes a pixel while it is decoded)
MAX_PIXELS = 400_000_000
MAX_PIXELS_ENV = "QKDISSECT_MAX_PIXELS"
#: images with more pixels than this are reduced while (JPEG: DCT-domain, 1/2 to 1/8) or right after (others: box
#: average by an integer factor, before any copy) they are decoded, never below twice the model's input side, to
#: bound memory; all others are decoded in full, pixel for pixel as timm and Hugging Face decode them
DRAFT_PIXELS = 50_000_000
#: modes whose pixels cannot be averaged as they are (palette indices; PIL reduces no 1-bit or 16-bit image)
_WIDEN = {"1": "L", "P": "RGBA", "PA": "RGBA", "I;16": "I", "I;16B": "I", "I;16L": "I", "I;16N": "I"}
#: EXIF orientation -> the transpose that makes the image upright (as ImageOps.exif_transpose)
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def max_pixels() -> int:
    """The most pixels an image is decoded at: ``$QKDISSECT_MAX_PIXELS``, else :data:`MAX_PIXELS`."""
    text = os.environ.get(MAX_PIXELS_ENV, "")
    if not text:
        return MAX_PIXELS
    if not text.isdigit() or int(text) < 1:
        raise QKDissectError(f"${MAX_PIXELS_ENV} is {text!r}: give a positive number of pixels, e.g. 100000000")
    return int(text)


class ImageDecodeError(QKDissectError):
    pass


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB: 16-bit/32-bit/float scaled by their range, alpha composited on white."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
        a = (a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)
        img = Image.fromarray(np.nan_to_num(a).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return img.convert("RGB")


def array_to_image(a: np.ndarray) -> Image.Image:
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    if a.dtype != np.uint8:
        a = a.astype(np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = ((a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)).astype(np.uint8)
    if a.ndim == 3 and a.shape[2] == 4:
        return to_rgb(Image.fromarray(a, "RGBA"))
    return Image.fromarray(a).convert("RGB")


def decode(item: ImageItem, target: int | None = None, raw: Raw | None = None) -> Image.Image:
    """An image as 8-bit RGB, upright (EXIF orientation applied), decoded in full — except JPEGs over
    :data:`DRAFT_PIXELS` pixels when a ``target`` (the model's input side) is given: those are decoded at a reduced
    scale, never below twice ``target`` on either side. ``raw``: the image already read (:func:`read_raw`), so that
    it is not read twice. Raises ImageDecodeError naming the file."""
    if item.path is None:
        return array_to_image(raw if isinstance(raw, np.ndarray) else bundled_array(item.id))
    limit = max_pixels()
    try:
        if raw is None and item.row is not None:
            raw = read_raw(item)
        with Image.open(io.BytesIO(raw) if isinstance(raw, bytes) else item.path) as im:
            size = f"{im.width}x{im.height}"
            side = 2 * target if target else 0  # the least a reduced image keeps a side
            huge = side > 0 and im.width * im.height > DRAFT_PIXELS
            if huge and im.format == "JPEG":
                im.draft("RGB", (side, side))  # decode at 1/2..1/8 scale, never below 2x target
            if im.width * im.height > limit:
                raise ImageDecodeError(
                    f"{item.where}: {size} would be decoded at {im.width * im.height} pixels, over the limit of "
                    f"{limit} (${MAX_PIXELS_ENV}): skipped"
                )
            im.load()
            if huge and im.format != "JPEG":
                return to_rgb(_reduced(im, side))
            upright: Image.Image = ImageOps.exif_transpose(im) or im
            return to_rgb(upright)
    except ImageDecodeError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise decode_error(item, e) from e


def _reduced(im: Image.Image, side: int) -> Image.Image:
    """A decoded image box-averaged by an integer factor to no less than ``side`` pixels a side, and made upright,
    without any full-size copy of it (what a JPEG's draft does while it is decoded)."""
    turn = _UPRIGHT.get(im.getexif().get(0x0112, 1))
    k = min(im.width, im.height) // side
    small = im if k < 2 else (im.convert(_WIDEN[im.mode]) if im.mode in _WIDEN else im).reduce(k)
    return small.transpose(turn) if turn is not None else small


def decode_error(item: ImageItem, e: Exception) -> ImageDecodeError:
    """``e`` of decoding ``item`` as one line naming the image (PIL names an image read from memory by the
    object's address: the image's id instead)."""
    said = re.sub(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>", repr(item.id), str(e))
    return ImageDecodeError(f"{item.where}: cannot decode ({type(e).__name__}: {said})")


ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, not a grey half-image
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
