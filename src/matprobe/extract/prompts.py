"""What a sample's prompt shows: one image, or a segmentation item rendered as images.

A segmentation item's options are masks (CrossMed §III: "models select the correct binary
mask among four options"). A VLM sees them drawn on the question image, in one of two
renderings (recorded in the store's provenance as ``segmentation_rendering``):

- ``multi-image``: the question image, then one image per option: the question image with
  that candidate's contour drawn in red (255, 0, 0), labelled with its letter in a black box
  at the top-left corner. Prompt: K + 1 images, then the text. LLaVA-1.5-HF and Qwen2-VL
  both take several images in one prompt; `tokens.build_batch` gives every processor one list
  of images per prompt.
- ``grid``: one composite: the K overlays (as above) in a 2 x 2 grid (row-major: A B / C D),
  panels separated by a white gap of `GRID_GAP` pixels; for models trained on one image per
  prompt.

The text starts with a line saying which image is which (`PREAMBLES`), then the usual
question / options / instruction (tokens.PROMPT_TEMPLATE). Contours are the mask's pixels
that have a background 4-neighbour (or lie on the image border), thickened to
`contour_width` pixels on large images so they survive the processor's resize.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from matprobe.errors import ExtractError

RENDERINGS = ("multi-image", "grid")
DEFAULT_RENDERING = "multi-image"
CONTOUR_RGB = (255, 0, 0)
LABEL_BOX_RGB = (0, 0, 0)
LABEL_TEXT_RGB = (255, 255, 255)
GRID_GAP = 2
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# Short on purpose: every token is paid for on every item (a 5-image prompt is long enough).
PREAMBLES = {
    "multi-image": "Image 1: the question. Images 2-{n}: masks {first}-{last} in red.",
    "grid": "Masks {first}-{last} in red, one panel each.",
}
RENDERING_DEFINITIONS = {
    "multi-image": "question image, then one image per option: the question image with that "
                   "candidate's contour in red (255,0,0) and its letter in a black box at the "
                   "top-left; text after the images",
    "grid": f"one 2x2 composite (A B / C D, {GRID_GAP}-px white gap) of the per-option overlays "
            "(red contour, letter box); text after the image",
}


def check_rendering(name: str) -> str:
    if name not in RENDERINGS:
        raise ExtractError(f"--rendering {name!r}: use one of {', '.join(RENDERINGS)}")
    return name


def contour_width(size_hw: tuple[int, int]) -> int:
    """Contour thickness in pixels: 1 up to 167 px, then about 1 per 112 px of the shorter side."""
    return max(1, int(round(min(size_hw) / 112)))


def contour(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """Boundary pixels of a bool mask: inside it, within `width` 4-steps of background or border."""
    from scipy.ndimage import binary_erosion

    mask = np.asarray(mask, dtype=bool)
    inner = binary_erosion(mask, iterations=width, border_value=0)
    return mask & ~inner


def _font(size_px: int):
    try:
        return ImageFont.load_default(size=max(8, size_px))
    except TypeError:  # Pillow without FreeType sizes
        return ImageFont.load_default()


def label_box(size_hw: tuple[int, int]) -> tuple[int, int]:
    """(height, width) of the letter box drawn at the top-left corner of an overlay."""
    side = max(8, int(round(min(size_hw) * 0.18)))
    return side, side


def overlay(image: Image.Image, mask: np.ndarray, letter: str) -> Image.Image:
    """The image with `mask`'s contour in red and `letter` in a black box at the top-left."""
    rgb = np.array(image.convert("RGB"))
    h, w = rgb.shape[:2]
    if mask.shape != (h, w):
        raise ExtractError(f"mask shape {mask.shape} differs from the image's {(h, w)}")
    rgb[contour(mask, contour_width((h, w)))] = CONTOUR_RGB
    out = Image.fromarray(rgb)
    bh, bw = label_box((h, w))
    draw = ImageDraw.Draw(out)
    draw.rectangle([0, 0, bw - 1, bh - 1], fill=LABEL_BOX_RGB)
    font = _font(int(bh * 0.9))
    left, top, right, bottom = draw.textbbox((0, 0), letter, font=font)
    draw.text(((bw - (right - left)) / 2 - left, (bh - (bottom - top)) / 2 - top), letter,
              fill=LABEL_TEXT_RGB, font=font)
    return out


def grid_panel_origin(index: int, size_hw: tuple[int, int]) -> tuple[int, int]:
    """(top, left) of panel `index` (0 = A) in the grid composite of panels of size (H, W)."""
    h, w = size_hw
    row, col = divmod(index, 2)
    return row * (h + GRID_GAP), col * (w + GRID_GAP)


def grid(panels: list[Image.Image]) -> Image.Image:
    """A 2 x 2 composite (row-major) of up to four equal-size panels on white."""
    if not 1 <= len(panels) <= 4:
        raise ExtractError(f"the grid rendering takes 2-4 options, got {len(panels)}; use multi-image")
    w, h = panels[0].size
    out = Image.new("RGB", (2 * w + GRID_GAP, 2 * h + GRID_GAP), (255, 255, 255))
    for i, panel in enumerate(panels):
        top, left = grid_panel_origin(i, (h, w))
        out.paste(panel, (left, top))
    return out


def render_images(image: Image.Image, candidates: list[np.ndarray], rendering: str) -> list[Image.Image]:
    """The images a segmentation item's prompt shows, in order (module docstring)."""
    check_rendering(rendering)
    overlays = [overlay(image, m, LETTERS[i]) for i, m in enumerate(candidates)]
    if rendering == "multi-image":
        return [image.convert("RGB"), *overlays]
    return [grid(overlays)]


def preamble(rendering: str, k: int) -> str:
    return PREAMBLES[rendering].format(n=k + 1, first=LETTERS[0], last=LETTERS[k - 1])


@dataclass
class RenderedSample:
    """A sample ready for the processor: its images in prompt order, the text preamble
    (None for an ordinary item) and, for a segmentation item, its masks (data.masks.MaskSet)."""

    images: list[Image.Image]
    preamble: str | None = None
    masks: object | None = None


def render_sample(sample, rendering: str = DEFAULT_RENDERING) -> RenderedSample:
    """Images (+ preamble and masks) of one sample; an ordinary item is its one image."""
    from matprobe.data.images import load_image

    image = load_image(sample)
    if not getattr(sample, "is_segmentation", False):
        return RenderedSample([image])
    from matprobe.data.masks import load_item_masks

    masks = load_item_masks(sample, image.size[::-1])
    return RenderedSample(render_images(image, masks.candidates, rendering),
                          preamble(rendering, len(masks.candidates)), masks)
