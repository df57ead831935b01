"""An offline demo MAT dataset built from real medical images shipped inside installed packages.

Sources (all read from the installed package, nothing is downloaded):

| modality   | anatomy    | file                                            | licence / origin      |
|------------|------------|-------------------------------------------------|-----------------------|
| CT         | Chest      | pydicom examples ``ct`` (thoracic CT, 128²)     | pydicom test data     |
| MRI        | Abdomen    | pydicom examples ``overlay`` (MR abdomen)       | pydicom test data     |
| MRI        | Brain      | nibabel tests/data ``example4d.nii.gz``,        | nibabel test data     |
|            |            | ``anatomical.nii``, ``functional.nii``          |                       |
| Ultrasound | Lymph node | pydicom examples ``rgb_color``, ``jpeg2k``      | pydicom test data     |
| Fundus     | Eye        | scikit-image ``retina.jpg``, ``microaneurysms`` | CC0 / no restrictions |
| Microscopy | Colon      | scikit-image ``ihc.png`` (colon IHC)            | no known restrictions |

Each base image gives many samples through crops, slices (NIfTI volumes), frames and light
jitter. Two tasks are posed as four-option questions with a fixed option order (a tiny
model cannot learn a pointer from shuffled letters to classes; docs/design.md §1):

- **Quality**: the image is shown clean, blurred (5×5 box), with Gaussian noise (sd 40
  grey levels) or at 30% contrast;
- **Exposure**: the intensities are shown as acquired, darkened (gamma 2.2),
  brightened (gamma 0.45) or inverted.

- **Segmentation** (CrossMed §III: "models select the correct binary mask among four
  options"): the image as acquired and four candidate masks (option_masks). The ground
  truth comes from classical segmentation of the packaged base image (`structure_mask`):
  the vertebra on the thoracic CT crop (top class of a three-class multi-Otsu threshold),
  the head on the brain MR slices and the body on the abdominal MR (brighter than half the
  Otsu threshold); largest component, holes filled. The
  image and its mask are cropped and resized together (nearest neighbour for the mask).
  Distractors, as CrossMed describes, are plausible masks from other regions or images:
  the truth shifted by a third of the image, the truth mirrored, and the mask of another
  crop of the same kind of image, each with IoU < 0.5 against the truth.

The question text names only the task, never the modality or anatomy, so M and A reach
the model through the image alone.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from matprobe.data.images import read_dicom, read_nifti
from matprobe.data.manifest import load_manifest, write_manifest
from matprobe.data.model import MATDataset, Sample

TASKS = {
    "Quality": ("What degrades this image?", ("nothing", "blur", "noise", "low contrast")),
    "Exposure": ("How are the intensities of this image shown?", ("as acquired", "darkened", "brightened", "inverted")),
    "Segmentation": ("Which mask outlines the structure of interest?", ("mask A", "mask B", "mask C", "mask D")),
}
# (modality, anatomy) -> the structure its Segmentation items outline (`structure_mask`).
SEGMENTED_STRUCTURE = {("CT", "Chest"): "bone", ("MRI", "Brain"): "body", ("MRI", "Abdomen"): "body"}
MAX_DISTRACTOR_IOU = 0.5

# (modality, anatomy) -> loaders of base images; each yields 2-D/RGB arrays.
SOURCES: dict[tuple[str, str], tuple[str, ...]] = {
    ("CT", "Chest"): ("pydicom:ct",),
    ("MRI", "Abdomen"): ("pydicom:overlay",),
    ("MRI", "Brain"): ("nibabel:example4d.nii.gz", "nibabel:anatomical.nii", "nibabel:functional.nii"),
    ("Ultrasound", "Lymph node"): ("pydicom:rgb_color", "pydicom:jpeg2k"),
    ("Fundus", "Eye"): ("skimage:retina.jpg", "skimage:microaneurysms.png"),
    ("Microscopy", "Colon"): ("skimage:ihc.png",),
}

DEFAULT_TRIPLETS: tuple[tuple[str, str, str], ...] = (
    ("MRI", "Brain", "Exposure"),          # the held-out target of the demo
    ("MRI", "Brain", "Quality"),           # related: shares M, A
    ("MRI", "Abdomen", "Exposure"),        # related: shares M, T
    ("CT", "Chest", "Quality"),            # unrelated: shares nothing
    ("Fundus", "Eye", "Exposure"),         # unrelated: shares T
    ("Microscopy", "Colon", "Quality"),    # unrelated: shares nothing
    ("Ultrasound", "Lymph node", "Exposure"),  # unrelated: shares T
    ("MRI", "Brain", "Segmentation"),      # the held-out segmentation target (related to the first)
    ("MRI", "Abdomen", "Segmentation"),    # related to the segmentation target: shares M, T
    ("CT", "Chest", "Segmentation"),       # unrelated to both targets: shares T with the second
)


def _package_dir(package: str) -> Path:
    module = __import__(package)
    return Path(os.path.dirname(module.__file__))


@lru_cache(maxsize=None)
def _base_slices(source: str) -> tuple[np.ndarray, ...]:
    """uint8 RGB arrays: the base images (volume slices, frames) of one packaged file."""
    kind, name = source.split(":", 1)
    if kind == "pydicom":
        from pydicom import examples

        return (np.asarray(read_dicom(Path(examples.get_path(name)))),)
    if kind == "skimage":
        path = _package_dir("skimage") / "data" / name
        with Image.open(path) as im:
            return (np.asarray(im.convert("RGB")),)
    if kind == "nibabel":
        import nibabel as nib

        path = _package_dir("nibabel") / "tests" / "data" / name
        depth = nib.load(str(path)).shape[2]
        # central two thirds of the axial slices: the ends are mostly air
        idx = range(depth // 6, depth - depth // 6)
        return tuple(np.asarray(read_nifti(path, i)) for i in idx)
    raise ValueError(f"unknown demo image source {source!r}")


def base_images(modality: str, anatomy: str) -> list[np.ndarray]:
    out: list[np.ndarray] = []
    for source in SOURCES[(modality, anatomy)]:
        out.extend(_base_slices(source))
    return out


def _augment(img: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """Random crop (60–100% of the shorter side), resize, light brightness jitter."""
    h, w = img.shape[:2]
    side = int(min(h, w) * rng.uniform(0.6, 1.0))
    top = int(rng.integers(0, h - side + 1))
    left = int(rng.integers(0, w - side + 1))
    crop = Image.fromarray(img[top:top + side, left:left + side]).resize((size, size), Image.BILINEAR)
    arr = np.asarray(crop, dtype=np.float64) * rng.uniform(0.9, 1.1)
    return np.clip(arr, 0, 255)


def structure_mask(img: np.ndarray, structure: str) -> np.ndarray:
    """Classical segmentation of a base image (uint8 RGB), holes filled, largest component:
    'body' = brighter than half the Otsu threshold; 'bone' = the top class of a three-class
    multi-Otsu threshold (the vertebra on the thoracic CT crop)."""
    from scipy import ndimage as ndi
    from skimage.filters import threshold_multiotsu, threshold_otsu

    gray = np.asarray(img, dtype=np.float64).mean(axis=-1) if img.ndim == 3 else np.asarray(img, float)
    if structure == "body":
        fg = gray > 0.5 * threshold_otsu(gray)
    elif structure == "bone":
        fg = gray > threshold_multiotsu(gray, classes=3)[-1]
    else:
        raise ValueError(f"unknown demo structure {structure!r}")
    labels, n = ndi.label(ndi.binary_opening(fg, iterations=1))
    if n == 0:
        return np.zeros(gray.shape, bool)
    sizes = ndi.sum(np.ones_like(gray), labels, index=range(1, n + 1))
    return ndi.binary_fill_holes(labels == 1 + int(np.argmax(sizes)))


@lru_cache(maxsize=None)
def _base_masks(modality: str, anatomy: str) -> tuple[np.ndarray, ...]:
    return tuple(structure_mask(b, SEGMENTED_STRUCTURE[(modality, anatomy)]) for b in base_images(modality, anatomy))


def _crop_pair(img: np.ndarray, mask: np.ndarray, rng: np.random.Generator, size: int):
    """`_augment` for an image and its mask together (same crop; nearest neighbour for the mask)."""
    h, w = img.shape[:2]
    side = int(min(h, w) * rng.uniform(0.6, 1.0))
    top = int(rng.integers(0, h - side + 1))
    left = int(rng.integers(0, w - side + 1))
    box = (slice(top, top + side), slice(left, left + side))
    crop = Image.fromarray(img[box]).resize((size, size), Image.BILINEAR)
    arr = np.clip(np.asarray(crop, dtype=np.float64) * rng.uniform(0.9, 1.1), 0, 255)
    m = np.asarray(Image.fromarray(mask[box].astype(np.uint8) * 255).resize((size, size), Image.NEAREST)) > 0
    return arr, m


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    u = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / u if u else 1.0


def _shifted(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(mask)
    h, w = mask.shape
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = mask[max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return out


def segmentation_item(modality: str, anatomy: str, rng: np.random.Generator, size: int):
    """(image, truth, three distractors) for one demo segmentation item (module docstring)."""
    bases, masks = base_images(modality, anatomy), _base_masks(modality, anatomy)

    def draw():
        for _ in range(50):  # a crop whose mask covers 3-85% of it
            k = int(rng.integers(len(bases)))
            img, m = _crop_pair(bases[k], masks[k], rng, size)
            if 0.03 <= m.mean() <= 0.85:
                return img, m
        raise ValueError(f"no usable {modality}/{anatomy} crop with a mask")

    img, truth = draw()
    third = size // 3
    shifts = [(dy, dx) for dy in (-third, 0, third) for dx in (-third, 0, third) if (dy, dx) != (0, 0)]
    candidates = [_shifted(truth, *shifts[int(i)]) for i in rng.permutation(len(shifts))]
    candidates += [truth[:, ::-1], truth[::-1, :], truth[::-1, ::-1]]
    candidates += [draw()[1] for _ in range(6)]
    distractors = []
    for group in (candidates[:8], candidates[8:11], candidates[11:]):  # shifted, mirrored, other crop
        for c in group:
            if c.any() and _iou(c, truth) < MAX_DISTRACTOR_IOU:
                distractors.append(np.ascontiguousarray(c))
                break
    while len(distractors) < 3:  # fall back on any remaining plausible candidate
        c = next(c for c in candidates if c.any() and _iou(c, truth) < MAX_DISTRACTOR_IOU
                 and not any(np.array_equal(c, d) for d in distractors))
        distractors.append(np.ascontiguousarray(c))
    return img, truth, distractors


def apply_task(arr: np.ndarray, task: str, answer: int) -> np.ndarray:
    """The image for option `answer` of `task` (see the module docstring)."""
    if task == "Quality":
        if answer == 0:
            return arr
        if answer == 1:  # box blur over 5 x 5 pixels
            from scipy.ndimage import uniform_filter

            return uniform_filter(arr, size=(5, 5, 1)[: arr.ndim], mode="nearest")
        if answer == 2:  # Gaussian noise, sd 40 grey levels (seeded by the content)
            noise = np.random.default_rng(int(arr.sum()) % (2**32)).normal(0.0, 40.0, arr.shape)
            return np.clip(arr + noise, 0, 255)
        mean = arr.mean()
        return mean + 0.3 * (arr - mean)  # contrast reduced to 30%
    if task == "Exposure":
        x = arr / 255.0
        x = [x, x ** 2.2, x ** 0.45, 1.0 - x][answer]
        return x * 255.0
    raise ValueError(f"unknown demo task {task!r}")


@dataclass
class DemoSpec:
    n_per_triplet: int = 96
    image_size: int = 56
    seed: int = 0
    triplets: Sequence[tuple[str, str, str]] = DEFAULT_TRIPLETS


def build_demo_dataset(out_dir: str | os.PathLike, spec: DemoSpec | None = None) -> MATDataset:
    """Write PNGs and `manifest.jsonl` under `out_dir`; return the dataset.

    Answers are balanced within each triplet (each option equally often).
    """
    spec = spec or DemoSpec()
    out_dir = Path(out_dir)
    img_dir = out_dir / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    samples = []
    for m, a, t in spec.triplets:
        bases = base_images(m, a)
        question, options = TASKS[t]
        for i in range(spec.n_per_triplet):
            answer = i % len(options)
            sid = f"{m}-{a}-{t}-{i:04d}".replace(" ", "_")
            if t == "Segmentation":
                samples.append(_write_segmentation_item(out_dir, sid, m, a, answer, question, options, rng,
                                                        spec.image_size))
                continue
            base = bases[int(rng.integers(len(bases)))]
            arr = apply_task(_augment(base, rng, spec.image_size), t, answer)
            path = img_dir / f"{sid}.png"
            Image.fromarray(np.round(arr).astype(np.uint8)).save(path)
            samples.append(Sample(
                id=sid, image=str(path.relative_to(out_dir)), question=question, options=options,
                answer_index=answer, modality=m, anatomy=a, task=t, label=options[answer],
            ))
    write_manifest(MATDataset(samples, str(out_dir / "manifest.jsonl")), out_dir / "manifest.jsonl")
    if any(t == "Segmentation" for _, _, t in spec.triplets):
        (out_dir / "segmentation.json").write_text(json.dumps(
            {f"{m}/{a}": SEGMENTED_STRUCTURE[(m, a)] for m, a, t in spec.triplets if t == "Segmentation"},
            indent=1))
    (out_dir / "sources.json").write_text(json.dumps(
        # in the triplets' order (a set's order changes with the process's string hashing)
        {f"{m}/{a}": list(SOURCES[(m, a)]) for m, a in dict.fromkeys((m, a) for m, a, _ in spec.triplets)},
        indent=1))
    return load_manifest(out_dir / "manifest.jsonl")  # image paths resolved against out_dir


def _write_segmentation_item(out_dir: Path, sid: str, m: str, a: str, answer: int, question: str,
                             options, rng: np.random.Generator, size: int) -> Sample:
    img, truth, distractors = segmentation_item(m, a, rng, size)
    (out_dir / "masks").mkdir(exist_ok=True)
    path = out_dir / "images" / f"{sid}.png"
    Image.fromarray(np.round(img).astype(np.uint8)).save(path)
    masks = list(distractors)
    masks.insert(answer, truth)
    names = []
    for k, mask in enumerate(masks):
        mpath = out_dir / "masks" / f"{sid}-{'ABCD'[k]}.png"
        Image.fromarray(mask.astype(np.uint8) * 255).save(mpath)
        names.append(str(mpath.relative_to(out_dir)))
    return Sample(
        id=sid, image=str(path.relative_to(out_dir)), question=question, options=tuple(options),
        answer_index=answer, modality=m, anatomy=a, task="Segmentation", label=options[answer],
        option_masks=tuple(names),
    )
