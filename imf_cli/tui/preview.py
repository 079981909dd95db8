"""The entity image in the detail pane, drawn by textual-image.

textual-image speaks the Kitty terminal graphics protocol and Sixel, so terminals that can show real
pixels do; elsewhere it falls back to coloured half blocks (two pixels a cell), or to plain unicode
blocks when stdout is not a terminal. It detects what the terminal speaks when it is first imported,
which must happen before Textual takes over the terminal: ``imf explore`` imports this module first.

:data:`IMAGE_MODES` names the renderers; ``auto`` is the detected one. Tests force ``halfcell`` so that
snapshots do not depend on the terminal.
"""

from __future__ import annotations

from textual.widget import Widget
from textual.widgets import Static

IMAGE_MODES = ("auto", "tgp", "sixel", "halfcell", "unicode", "none")


def image_widget(mode: str = "auto", *, id: str | None = None) -> Widget:
    """A widget for the image, drawn with ``mode``; ``none`` gives an empty placeholder that stays hidden."""
    if mode not in IMAGE_MODES:
        raise ValueError(f"unknown image mode {mode!r}; choose from {', '.join(IMAGE_MODES)}")
    if mode == "none":
        return Static(id=id)
    from textual_image import widget

    kinds = {
        "auto": widget.Image,
        "tgp": widget.TGPImage,
        "sixel": widget.SixelImage,
        "halfcell": widget.HalfcellImage,
        "unicode": widget.UnicodeImage,
    }
    return kinds[mode](id=id)


def show_image(preview: Widget, path: str | None) -> bool:
    """Point ``preview`` at the image file ``path`` (None hides it); False when it cannot be read."""
    if path is None or isinstance(preview, Static):
        preview.display = False
        return False
    try:
        preview.image = path
    except Exception:  # PIL raises OSError subclasses, DecompressionBombError, ValueError…
        preview.image = None
        preview.display = False
        return False
    preview.display = True
    return True
