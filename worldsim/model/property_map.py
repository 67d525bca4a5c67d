"""Each object's physical properties from the prompt, painted on its pixels for the flow to read.

At a contact a ball's next move depends on its restitution and, in a collision, on the masses: a
prompt gives them (``balls: red agent ball, ..., restitution 0.81, ...``), no frame before the
contact shows them, and the PyBullet twin is given them. The prompt embedding carries them as one
vector for the whole scene, and the flow did not read them from it: on Balls' held-out episodes,
setting every restitution in the prompt to 0.50 or to 0.85 moved the flow's predicted moves by
0.002 px, and at bounces its vertical error splits by restitution, too high for the less bouncy
half and too low for the bouncier (README, "What the flow does not read from the prompt"). The map
hands each object's properties to the pixels that move with it, as the script map hands the U-Net
where a scripted agent will be: reading "this ball is bouncy" is then local, not a binding of a
number in a sentence to a colour.

Tensors and numbers only: the properties come from a caller's ``worldsim.scenes.properties_of``
(objects with ``rgb``, uint8, and ``values``, one float per property).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from worldsim.model.warp import COLOUR_TOL


def paint_properties(frames: torch.Tensor, properties: Sequence[Sequence[Any]], count: int) -> torch.Tensor:
    """``float[B, count, H, W]``: on the pixels of ``frames[B, 3, H, W]`` ([-1, 1]) within
    ``COLOUR_TOL`` of an object's colour, that object's ``count`` property values; zero elsewhere.
    ``properties`` holds one sequence of objects per frame (``worldsim.scenes.Properties``); a scene's
    objects have distinct colours, so no pixel is painted twice."""
    b, _, h, w = frames.shape
    if len(properties) != b:
        raise ValueError(f"properties for {len(properties)} worlds, but {b} frames")
    n = max((len(objects) for objects in properties), default=0)
    if n == 0:
        return frames.new_zeros(b, count, h, w)
    colours = torch.full((b, n, 3), float("inf"))  # no pixel is near an absent object's colour
    values = torch.zeros(b, n, count)
    for i, objects in enumerate(properties):
        for j, obj in enumerate(objects):
            if len(obj.values) != count:
                raise ValueError(
                    f"this generator reads {count} properties per object; an object of colour "
                    f"{tuple(obj.rgb)} has {len(obj.values)}"
                )
            colours[i, j] = torch.tensor(obj.rgb, dtype=torch.float32) / 127.5 - 1.0
            values[i, j] = torch.tensor(obj.values, dtype=torch.float32)
    colours, values = colours.to(frames.device), values.to(frames.device)
    on = (frames.float()[:, None] - colours[..., None, None]).abs().amax(2) < COLOUR_TOL  # [B, N, H, W]
    return torch.einsum("bnhw,bnq->bqhw", on.float(), values)
