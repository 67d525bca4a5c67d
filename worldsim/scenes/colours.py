"""Flat, well-separated object colours.

Every object is drawn in one flat colour (emission only, no shading, no shadows) so that an
extractor can find it by colour in truth and generated frames alike. Static scenery uses greys and
browns that no object uses.
"""

from __future__ import annotations

OBJECT_COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.10, 0.10),
    "blue": (0.10, 0.30, 0.95),
    "green": (0.10, 0.80, 0.20),
    "yellow": (0.95, 0.85, 0.10),
    "magenta": (0.85, 0.15, 0.85),
    "cyan": (0.10, 0.85, 0.90),
}

SCENERY_COLOURS: dict[str, tuple[float, float, float]] = {
    "backdrop": (0.85, 0.85, 0.85),
    "floor": (0.30, 0.30, 0.30),
    "wall": (0.55, 0.55, 0.55),
    "goal": (1.00, 0.55, 0.00),
    "table": (0.76, 0.62, 0.42),
    "rim": (0.45, 0.33, 0.20),
    "pusher": (0.12, 0.12, 0.12),
    "road": (0.25, 0.25, 0.27),
    "grass": (0.35, 0.55, 0.30),
    "marking": (0.97, 0.97, 0.97),
}


def rgba(name: str) -> str:
    """MJCF ``rgba`` attribute text for a named object or scenery colour."""
    r, g, b = OBJECT_COLOURS.get(name) or SCENERY_COLOURS[name]
    return f"{r:.3f} {g:.3f} {b:.3f} 1"


def rgb_uint8(name: str) -> tuple[int, int, int]:
    """The colour as it appears in a rendered uint8 frame (flat emission, no lighting)."""
    r, g, b = OBJECT_COLOURS.get(name) or SCENERY_COLOURS[name]
    return round(r * 255), round(g * 255), round(b * 255)
