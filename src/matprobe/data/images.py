"""Image loading for MAT samples: PNG/JPEG (Pillow), DICOM (pydicom), NIfTI (nibabel).

Every loader returns an 8-bit RGB `PIL.Image`, the input the VLM processors expect.
Medical intensities (CT Hounsfield units, MR signal) are windowed to the 0.5–99.5th
percentile of the slice before 8-bit scaling, so one bright voxel does not blank the image.
Raster files (PNG, JPEG, TIFF) go through Pillow's `convert("RGB")`, as LLaVA's training code,
LLaMA-Factory, qwen-vl-utils and transformers' image processors load them, so a fine-tuned
model is probed on the pixels it was trained and evaluated on. For files of more than 8 bits
per pixel (Pillow modes I;16*, I, F: 16-bit grey PNG, float TIFF) that conversion clips every
value above 255 (a 12-bit CT in a 16-bit PNG comes out about 91% white); `wide_raster_note`
says so wherever such files are read (`data validate`, `extract`, `run`) rather than
silently choosing another conversion than the model's own pipeline did.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from matprobe.errors import DataError

DICOM_SUFFIXES = (".dcm", ".dicom")
NIFTI_SUFFIXES = (".nii", ".nii.gz")


def image_kind(path: str | os.PathLike) -> str:
    name = str(path).lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(DICOM_SUFFIXES):
        return "dicom"
    return "raster"


def to_uint8(array: np.ndarray) -> np.ndarray:
    """Robustly window a 2-D (or H×W×C) intensity array into 0..255."""
    a = np.asarray(array, dtype=np.float64)
    finite = a[np.isfinite(a)]
    if finite.size == 0:
        return np.zeros(a.shape, dtype=np.uint8)
    lo, hi = np.percentile(finite, [0.5, 99.5])
    if hi <= lo:
        lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        return np.zeros(a.shape, dtype=np.uint8)
    scaled = np.clip((np.nan_to_num(a, nan=lo) - lo) / (hi - lo), 0.0, 1.0)
    return np.round(scaled * 255.0).astype(np.uint8)


def _array_to_rgb(array: np.ndarray) -> Image.Image:
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        rgb = array[..., :3]
        if rgb.dtype != np.uint8:
            rgb = to_uint8(rgb)
        return Image.fromarray(np.ascontiguousarray(rgb), mode="RGB")
    if array.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {array.shape}")
    return Image.fromarray(to_uint8(array), mode="L").convert("RGB")


WIDE_RASTER_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")  # more than 8 bits per pixel
TRANSPARENT_MODES = ("RGBA", "RGBa", "LA", "La", "PA")  # modes with an alpha channel


def raster_header(path: str | os.PathLike) -> tuple[str | None, bool]:
    """(Pillow mode, whether any pixel is not opaque) of a raster file. The header says whether the
    file can carry transparency (an alpha channel, a transparent palette colour); only those files
    are decoded to see whether a pixel uses it: an RGBA export whose alpha is 255 everywhere (what
    many tools write) reads the same either way, and is not worth a warning.
    (None, False): not a raster, or unreadable."""
    if image_kind(path) != "raster":
        return None, False
    try:
        with Image.open(path) as im:
            if im.mode not in TRANSPARENT_MODES and im.info.get("transparency") is None:
                return im.mode, False
            alpha = im.getchannel("A") if im.mode in TRANSPARENT_MODES else im.convert("RGBA").getchannel("A")
            return im.mode, alpha.getextrema()[0] < 255
    except Exception:  # noqa: BLE001 - the loader names an unreadable file; here it is just not noted
        return None, False


def image_notes(samples, base_dir: str | os.PathLike | None = None) -> list[str]:
    """The sentences on image files that the RGB conversion changes (`wide_raster_note`,
    `transparency_note`), from one header read per file; [] when there are none."""
    wide: dict[str, list[str]] = {}
    transparent: list[str] = []
    for s in samples:
        if s.image:
            mode, alpha = raster_header(resolve_image_path(s.image, base_dir))
            if mode in WIDE_RASTER_MODES:
                wide.setdefault(mode, []).append(s.id)
            if alpha:
                transparent.append(s.id)
    return [note for note in (wide_raster_note(wide), transparency_note(transparent)) if note]


def transparency_note(ids: list[str]) -> str | None:
    """A sentence on the image files with pixels that are not opaque (None: none). Pillow's
    convert('RGB'), which matprobe uses as LLaVA's training code does, drops the alpha and keeps the
    colour stored under transparent pixels; transformers' image processors (`convert_to_rgb`) and
    qwen-vl-utils composite such images onto white: the two differ wherever a pixel is not opaque."""
    if not ids:
        return None
    return (f"{len(ids)} image file(s) carry transparency (pixels that are not opaque, by an alpha channel or a "
            f"transparent palette colour; first: sample {ids[0]!r}): they are read by Pillow's convert('RGB'), as LLaVA's training code reads "
            "them, which drops the transparency and keeps the colour stored under it; transformers' image "
            "processors and qwen-vl-utils composite such images onto white instead. If your fine-tuning read "
            "them that way, composite the files onto white (or save them without transparency) before extracting")


def wide_raster_note(wide: dict[str, list[str]], saturated: float | None = None) -> str | None:
    """A sentence on the image files of more than 8 bits per pixel (`image_notes`; None: there
    are none): Pillow's RGB conversion clips them at 255, as the usual training code does.
    `saturated`: the share of their pixels at 255 after conversion, where the caller measured it."""
    if not wide:
        return None
    n = sum(len(v) for v in wide.values())
    first = next(iter(wide.values()))[0]
    modes = ", ".join(f"{k} ({len(v)})" for k, v in wide.items())
    share = "" if saturated is None else f"; {saturated:.0%} of their pixels are at 255 after it"
    return (f"{n} image file(s) have more than 8 bits per pixel (Pillow mode {modes}; first: sample {first!r}): "
            f"they are read by Pillow's convert('RGB'), as LLaVA's training code, LLaMA-Factory and "
            f"transformers' processors read them, which clips every value above 255{share}. A model "
            "fine-tuned on these files with such a loader saw them so; if your training converted them to "
            "8 bits another way (a window, a rescale), convert the files the same way before extracting")


def read_dicom(path: Path, frame: int | None = None) -> Image.Image:
    import pydicom

    ds = pydicom.dcmread(str(path))
    pixels = ds.pixel_array  # pydicom >= 3 already converts YCbCr colour data to RGB
    photometric = str(getattr(ds, "PhotometricInterpretation", "")).upper()
    n_frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if n_frames > 1:
        index = 0 if frame is None else frame
        if not 0 <= index < n_frames:
            raise ValueError(f"frame {index} out of range (the file has {n_frames})")
        pixels = pixels[index]
    if pixels.ndim == 2:
        slope = float(getattr(ds, "RescaleSlope", 1) or 1)
        intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
        pixels = pixels.astype(np.float64) * slope + intercept
        if photometric == "MONOCHROME1":  # 0 is white in MONOCHROME1
            pixels = pixels.max() - pixels
    return _array_to_rgb(pixels)


def read_nifti(path: Path, slice_index: int | None = None) -> Image.Image:
    return _array_to_rgb(nifti_slice(path, slice_index).astype(np.float64))


def nifti_slice(path: Path, slice_index: int | None = None) -> np.ndarray:
    """The 2-D slice shown for a NIfTI file: axial `slice_index` (default the middle one),
    first volume of a 4-D series, transposed and flipped upright. Masks use the same rule,
    so a mask slice lines up with its image slice."""
    import nibabel as nib

    img = nib.load(str(path))
    data = np.asanyarray(img.dataobj)
    while data.ndim > 3:  # 4-D series: first volume
        data = data[..., 0]
    if data.ndim == 3:
        depth = data.shape[2]
        index = depth // 2 if slice_index is None else slice_index
        if not -depth <= index < depth:
            raise ValueError(f"slice {index} out of range (the volume has {depth} axial slices)")
        data = data[:, :, index]
    # NIfTI stores (x, y): transpose and flip so the image is displayed upright.
    return np.flipud(np.asarray(data).T)


def is_file(path) -> bool:
    """Path.is_file for a path a data file gave: False, not OSError, for a name the system refuses
    (a base64 cell that is no image reads as a path thousands of characters long: ENAMETOOLONG)."""
    try:
        return Path(path).is_file()
    except (OSError, ValueError):
        return False


def shown_image(path, limit: int = 160) -> str:
    """An image path as a message shows it; a cell that is no path (say base64 that is not an
    image) cut to its first characters with its length, not thousands of characters on one line."""
    text = str(path)
    return text if len(text) <= limit else f"{text[:limit // 2]}... ({len(text)} characters: not an image path?)"


def load_image_path(path: str | os.PathLike, slice_index: int | None = None) -> Image.Image:
    """Load any supported image file as RGB; raise DataError naming the file on failure."""
    path = Path(path)
    if not is_file(path):
        raise DataError(f"image {shown_image(path)} not found; check the path or pass --image-root")
    kind = image_kind(path)
    try:
        if kind == "nifti":
            return read_nifti(path, slice_index)
        if kind == "dicom":
            return read_dicom(path, slice_index)
        with Image.open(path) as im:
            im.load()
            # as the training code reads it (module docstring): wide modes are clipped at 255
            return im.convert("RGB")
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad image for the user
        raise DataError(
            f"image {path} cannot be read as {kind} ({type(exc).__name__}: {exc}); "
            "replace the file or drop the record"
        ) from None


def resolve_image_path(image: str, base_dir: str | os.PathLike | None) -> Path:
    path = Path(image)
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    return path


def image_root_hint(image: str | None, manifest: str | os.PathLike,
                    max_dirs: int = 400) -> tuple[Path, Path] | None:
    """(folder, path) where a missing image's path, as the manifest gives it relative to its
    folder, does exist under a folder below the manifest's (two levels at most, `max_dirs` folders
    looked in): the image root the user meant (a SLAKE-style `img_name` column names files inside
    an `imgs/` folder). None where no such folder is found."""
    if not image:
        return None
    base = Path(os.path.abspath(manifest))
    base = base if base.is_dir() else base.parent
    path = Path(image)
    try:
        rel = path.relative_to(base) if path.is_absolute() else path
    except ValueError:
        return None
    looked = 0
    try:
        level1 = sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
        for top in level1:
            for folder in [top, *sorted(p for p in top.iterdir() if p.is_dir() and not p.name.startswith("."))]:
                looked += 1
                if looked > max_dirs:
                    return None
                if is_file(folder / rel):
                    return folder, rel
    except OSError:  # an unreadable folder: no hint, the error stands as it is
        return None
    return None


def shown_path(path) -> str:
    """A path as a message shows it: relative to the working folder where it lies below it."""
    rel = os.path.relpath(path)
    return str(path) if rel.startswith("..") else rel


def _root_fix(root_option: str, folder: Path) -> str:
    """`root_option` ('pass --image-root [DIR]', 'set [data] image_root') with the folder filled in."""
    if root_option.startswith("set "):
        return f'{root_option} = "{folder}"'
    return f"{root_option.removesuffix(' DIR')} {shown_path(folder)}"


def missing_images_error(samples, source: str, root_option: str = "pass --image-root", shown: int = 1) -> str | None:
    """The one-line error for samples whose image file is absent (or that name none), naming the
    count, the first sample (the first `shown`) and `source` (the manifest as the user gave it); None
    if every file is there. Paths as loaded (a data set's are resolved against its manifest's folder);
    `root_option` says how the caller's user sets the image folder."""
    samples = list(samples)
    missing = [s for s in samples if not s.image or not is_file(resolve_image_path(s.image, None))]
    if not missing:
        return None
    if not any(s.image for s in samples):  # a column of image files unmapped, not files that are absent
        from matprobe.data.columns import PIPELINE_COLUMNS, column_fix

        mapping = column_fix({"THEIRS": "image"}, PIPELINE_COLUMNS if root_option.startswith("set ") else "--columns")
        return (f"{source}: no item of {len(samples)} names an image: no column is read as 'image'; give each "
                f"item's image file in a column named image, or map yours with {mapping}")
    from matprobe.data.medmat import IMAGE_PREFIX, image_root_slip

    first = missing[0]
    # Med-MAT's records name their images under a med-mat/ folder that the release does not ship
    medmat = (f" (the folder Med-MAT's paths call {IMAGE_PREFIX}: it replaces that prefix)"
              if (first.image or "").startswith(IMAGE_PREFIX) else "")
    found = None if medmat else image_root_hint(first.image, source)
    where = f" ({found[1]} is in {shown_path(found[0])}: {_root_fix(root_option, found[0])})" if found else ""
    if not medmat and not found and first.image and (slip := image_root_slip(resolve_image_path(first.image, None))):
        # an image root one folder too high: the one that holds med-mat/, not med-mat/ itself
        where = (f" (the images are under {shown_path(slip)}; the image root replaces Med-MAT's {IMAGE_PREFIX} "
                 f"prefix, so it is that folder itself: {_root_fix(root_option, slip)})")
    firsts = ", ".join(f"{s.id!r}: {shown_image(s.image) if s.image else '(no image path)'}"
                       for s in missing[:max(shown, 1)])
    return (f"{source}: {len(missing)} of {len(samples)} image(s) missing, first sample"
            f"{'s' if min(shown, len(missing)) > 1 else ''} {firsts}; fix the paths or {root_option}{medmat}{where}")


def load_image(sample, base_dir: str | os.PathLike | None = None) -> Image.Image:
    """The RGB image of a `Sample` (relative paths resolve against `base_dir`)."""
    if not sample.image:
        raise DataError(f"sample {sample.id!r} has no image; give an image path in the data file")
    try:
        return load_image_path(resolve_image_path(sample.image, base_dir), sample.slice_index)
    except DataError as exc:
        raise DataError(f"sample {sample.id!r}: {exc}") from None
