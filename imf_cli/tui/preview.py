"""A small image preview from half blocks: each cell is ``▀`` with the top pixel as foreground and the
bottom pixel as background, so a cell shows two pixels. Pillow reads the image; rich draws it, and
downgrades the colours where the terminal has fewer than 24-bit colours."""

from __future__ import annotations

from functools import lru_cache

from rich.color import Color
from rich.style import Style
from rich.text import Text

#: Transparent pixels are drawn over this colour.
BACKDROP = (30, 30, 30)


@lru_cache(maxsize=64)
def half_block_preview(path: str, width: int = 20, height: int = 8) -> Text | None:
    """The image at ``path`` fitted into ``width`` × ``height`` cells, or None when it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            rgba = image.convert("RGBA")
    except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError):
        return None
    backdrop = Image.new("RGBA", rgba.size, (*BACKDROP, 255))
    rgb = Image.alpha_composite(backdrop, rgba).convert("RGB")
    scale = min(width / rgb.width, 2 * height / rgb.height)
    size = (max(1, round(rgb.width * scale)), max(2, round(rgb.height * scale)))
    rgb = rgb.resize(size, Image.Resampling.LANCZOS)
    pixels = rgb.load()
    text = Text(no_wrap=True, end="")
    for y in range(0, rgb.height, 2):
        if y:
            text.append("\n")
        for x in range(rgb.width):
            top = Color.from_rgb(*pixels[x, y])
            bottom = Color.from_rgb(*pixels[x, y + 1]) if y + 1 < rgb.height else None
            text.append("▀", Style(color=top, bgcolor=bottom))
    return text
