"""Binary masks of segmentation items: reading, checking against the image, intersection / union.

A segmentation item (CrossMed §III: "models select the correct binary mask among four
options") has a question image, one candidate mask per option and optionally a
ground-truth mask (default: the correct candidate). Masks are PNG/JPEG, NumPy ``.npy``
or NIfTI (the sample's ``slice`` picks the axial slice, as for images:
`matprobe.data.images.nifti_slice`).

Rules (`load_mask`), each stated in the returned notes or raised as a DataError:

- **binary**: two values at most (e.g. {0, 1}, {0, 255}, {False, True}); the larger is
  foreground. An 8-bit image with more grey levels (anti-aliased PNG) is thresholded at
  128 of 255 (unless every value is below 16: a label map); a float array within [0, 1] (a probability map) at 0.5; both are noted. Any
  other array with three or more values (an integer label map such as BraTS 0/1/2/4) is
  refused: save the wanted label as its own binary mask.
- **size**: a mask of the image's size is used as is. One whose height and width are the
  same multiple of the image's (or the image's of it) is resampled to the image's size by
  nearest neighbour, and noted. Another aspect ratio is refused.
- **ground truth**: an empty ground-truth mask is refused (its IoU is undefined).

Scores: for the chosen option, I = |chosen ∩ truth| and U = |chosen ∪ truth| in pixels at
the image's resolution; a run's cIoU is Σ I / Σ U over its items (CrossMed's class-wise
IoU; a ratio of sums, not the mean of per-item IoUs).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from matprobe.data.images import image_kind, is_file, nifti_slice, shown_image
from matprobe.errors import DataError

UINT8_THRESHOLD = 128
FLOAT_THRESHOLD = 0.5
LABEL_MAP_MAX = 16  # an 8-bit mask with 3+ values all below this is a label map, not grey levels


@dataclass
class MaskSet:
    """The masks of one segmentation item at the question image's size (H, W)."""

    candidates: list[np.ndarray]  # bool [H, W] per option
    truth: np.ndarray  # bool [H, W]
    notes: list[str] = field(default_factory=list)


def _raw_mask(path: Path, slice_index: int | None) -> np.ndarray:
    kind = image_kind(path)
    if kind == "nifti":
        return nifti_slice(path, slice_index)
    if path.suffix.lower() == ".npy":
        arr = np.load(path, allow_pickle=False)
        while arr.ndim > 2 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        if arr.ndim == 3 and slice_index is not None:
            arr = arr[..., slice_index]
        return arr
    if kind == "dicom":
        raise ValueError("DICOM masks are not supported; save the mask as PNG, .npy or NIfTI")
    with Image.open(path) as im:
        im.load()
        if im.mode in ("RGB", "RGBA", "P", "LA"):
            rgb = np.asarray(im.convert("RGB"))
            if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
                raise ValueError("a colour image; save the mask as a grey-level (L or 1-bit) image")
            return rgb[..., 0]
        return np.asarray(im)


def binarise(arr: np.ndarray, what: str) -> tuple[np.ndarray, str | None]:
    """A bool mask and a note when a threshold was applied (module docstring rules)."""
    arr = np.asarray(arr)
    if arr.ndim != 2:
        raise DataError(f"{what}: mask has shape {arr.shape}; a mask is 2-D (H x W)")
    if arr.dtype == bool:
        return arr, None
    if not np.isfinite(arr).all():
        raise DataError(f"{what}: mask contains NaN or Inf; save a binary mask")
    values = np.unique(arr)
    if len(values) <= 2:
        if len(values) == 2 and values[0] != 0:
            raise DataError(
                f"{what}: mask values are {values[0]:g} and {values[1]:g}; background must be 0 "
                f"(save the mask with 0 = background)"
            )
        return arr > 0, None
    if arr.dtype == np.uint8 and values.max() >= LABEL_MAP_MAX:
        return arr >= UINT8_THRESHOLD, f"{what}: {len(values)} grey levels, thresholded at {UINT8_THRESHOLD} of 255"
    if arr.dtype.kind == "f" and values.min() >= 0.0 and values.max() <= 1.0:
        return arr >= FLOAT_THRESHOLD, f"{what}: values in [0, 1], thresholded at {FLOAT_THRESHOLD}"
    shown = ", ".join(f"{v:g}" for v in values[:6]) + (", ..." if len(values) > 6 else "")
    raise DataError(
        f"{what}: mask is not binary (values {shown}); save one label as a 0/1 mask"
    )


def fit_to_image(mask: np.ndarray, size_hw: tuple[int, int], what: str) -> tuple[np.ndarray, str | None]:
    """The mask at the image's (H, W): as is, or nearest-neighbour resampled by a common factor."""
    h, w = mask.shape
    H, W = size_hw
    if (h, w) == (H, W):
        return mask, None
    same_factor = (H * w == W * h) and (H % h == 0 or h % H == 0) and (W % w == 0 or w % W == 0)
    if not same_factor:
        raise DataError(
            f"{what}: mask is {w}x{h} (W x H) but the image is {W}x{H}; save the mask at the "
            f"image's size (or an integer multiple of it)"
        )
    resized = Image.fromarray(mask.astype(np.uint8) * 255).resize((W, H), Image.NEAREST)
    return np.asarray(resized) > 0, f"{what}: resampled from {w}x{h} to {W}x{H} (nearest neighbour)"


def load_mask(path: str | os.PathLike, size_hw: tuple[int, int], slice_index: int | None = None,
              what: str | None = None) -> tuple[np.ndarray, list[str]]:
    """A bool [H, W] mask at the image's size, and notes on thresholds / resampling applied."""
    path = Path(path)
    what = what or shown_image(path)
    if not is_file(path):
        raise DataError(f"{what}: mask file {shown_image(path)} not found; fix the path in the manifest")
    try:
        raw = _raw_mask(path, slice_index)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad mask for the user
        raise DataError(
            f"{what}: mask {path} cannot be read ({type(exc).__name__}: {exc}); replace the file"
        ) from None
    notes = []
    mask, note = binarise(raw, what)
    if note:
        notes.append(note)
    mask, note = fit_to_image(mask, size_hw, what)
    if note:
        notes.append(note)
    return mask, notes


def load_item_masks(sample, image_size_hw: tuple[int, int] | None = None) -> MaskSet:
    """Every candidate mask and the ground truth of a segmentation `Sample`, checked.

    `image_size_hw` defaults to the size of the sample's image (loaded here).
    """
    from matprobe.data.images import load_image

    masks = tuple(getattr(sample, "option_masks", None) or ())
    if not masks:
        raise DataError(f"sample {sample.id!r} has no option_masks; it is not a segmentation item")
    if image_size_hw is None:
        w, h = load_image(sample).size
        image_size_hw = (h, w)
    notes: list[str] = []
    candidates = []
    for i, m in enumerate(masks):
        letter = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[i]
        arr, n = load_mask(m, image_size_hw, sample.slice_index,
                           what=f"sample {sample.id!r} option {letter} ({Path(m).name})")
        candidates.append(arr)
        notes.extend(n)
    if sample.mask:
        truth, n = load_mask(sample.mask, image_size_hw, sample.slice_index,
                             what=f"sample {sample.id!r} ground-truth mask ({Path(sample.mask).name})")
        notes.extend(n)
    else:
        truth = candidates[sample.answer_index]
    if not truth.any():
        src = "ground-truth mask" if sample.mask else f"correct option's mask (option {sample.answer_index})"
        raise DataError(
            f"sample {sample.id!r}: the {src} is empty, so its IoU is undefined; give a mask with "
            f"at least one foreground pixel or drop the item"
        )
    return MaskSet(candidates, truth, notes)


def intersection_union(chosen: np.ndarray, truth: np.ndarray) -> tuple[int, int]:
    """Pixel counts |chosen ∩ truth| and |chosen ∪ truth| of two bool masks of one shape."""
    chosen, truth = np.asarray(chosen, dtype=bool), np.asarray(truth, dtype=bool)
    if chosen.shape != truth.shape:
        raise ValueError(f"mask shapes differ: {chosen.shape} vs {truth.shape}")
    return int(np.count_nonzero(chosen & truth)), int(np.count_nonzero(chosen | truth))


def ciou(intersections: Sequence[int] | np.ndarray, unions: Sequence[int] | np.ndarray) -> float:
    """cIoU over items: Σ I / Σ U (rows with U < 0, i.e. not segmentation, are skipped)."""
    i = np.asarray(intersections, dtype=np.int64)
    u = np.asarray(unions, dtype=np.int64)
    keep = u >= 0
    total = int(u[keep].sum())
    return float(i[keep].sum() / total) if total > 0 else float("nan")
