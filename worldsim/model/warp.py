"""Moving pixels by a displacement field: how a generator with a flow carries objects forward whole.

A frame of a flat-colour scene changes mostly by objects moving. A generator that draws each pixel's
change as its mean prediction turns an object whose next position it is unsure of into a faint blend
of the places it may be, and over a rollout that blend dissolves into speckle (README, "Lost in one
step, or by compounding?"). Moving the last frame's pixels by a predicted displacement instead moves an unsure
object whole, to its mean position, and copies what stands still exactly.

The field is *forward*: it says where each pixel of the last frame goes. A backward field (where
each pixel of the next frame comes from) lives on the next frame's pixels, so where an unsure object
may go the field's mean mixes "comes from the object" with "stays": measured on Balls, the warp then
copies the object into every place it may go, and balls grow into blobs (README). A forward field
lives on pixels the model sees, and its mean over an object's possible moves is one move.

Each region of one flat colour moves as one, by its mean move in whole pixels (``region_mean_flow``:
rounded per pixel, a field that varies across an object cracks it), and what the moves uncover is
filled with the scenery the context last showed there (``scenery_behind``, for a scene whose
scenery stands still) or from the still scene around it (``fill_holes``), so the change drawn on top
is left with what truly appears.
"""

from __future__ import annotations

import torch

HOLE = 0.0
"""What a pixel an object moved away from (and nothing moved onto) holds until it is filled: mid grey
in [-1, 1], a value no scene draws."""


COLOUR_TOL = 0.05
"""Two pixels within this of each other in every channel ([-1, 1], about 6 grey levels) are one colour."""


def _check(frames: torch.Tensor, flow_px: torch.Tensor) -> None:
    if frames.ndim != 4 or flow_px.shape != (frames.shape[0], 2, *frames.shape[2:]):
        raise ValueError(
            f"a warp takes frames [B, C, H, W] and a flow [B, 2, H, W], got {tuple(frames.shape)} "
            f"and {tuple(flow_px.shape)}"
        )


def _runs(same_next: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The run of every pixel along the last axis, ``int64[...]`` flat in memory order (a global
    index per run of same-coloured pixels), and the number of runs. ``same_next[..., N-1]`` is True
    where a pixel has its successor's colour."""
    starts = torch.ones(
        *same_next.shape[:-1], same_next.shape[-1] + 1, dtype=torch.bool, device=same_next.device
    )
    starts[..., 1:] = ~same_next
    run = starts.reshape(-1).cumsum(0) - 1
    return run, int(run[-1]) + 1


def _spread(labels: torch.Tensor, run: torch.Tensor, count: int) -> torch.Tensor:
    """Give every run (``run``, from ``_runs``) the largest of its pixels' ``labels`` (flat)."""
    best = torch.full((count,), -1, dtype=labels.dtype, device=labels.device)
    return best.scatter_reduce(0, run, labels, reduce="amax").index_select(0, run)


def regions(frames: torch.Tensor, tol: float = COLOUR_TOL) -> torch.Tensor:
    """The region of every pixel, ``int64[B, H, W]``: pixels of one colour (within ``tol``) joined by
    4-neighbours share a label, the largest flat index among them.

    Each pass gives every horizontal run of one colour its largest label, then every vertical run:
    a label crosses a whole run per pass, so a region settles in about as many passes as it has
    turns (a handful for the scenes' shapes), not as many as it has pixels across. The runs depend
    on the colours alone, so they are found once, the vertical ones mapped to the pixels' row-major
    order, and every pass is two scatters and two gathers.
    """
    b, _, h, w = frames.shape
    right = (frames[..., :, 1:] - frames[..., :, :-1]).abs().amax(1) < tol  # [B, H, W-1]: same colour
    down = (frames[..., 1:, :] - frames[..., :-1, :]).abs().amax(1) < tol  # [B, H-1, W]
    across, n_across = _runs(right)
    down_runs, n_down = _runs(down.transpose(1, 2))  # column-major order: [B, W, H]
    along = down_runs.view(b, w, h).transpose(1, 2).reshape(-1)  # the same runs, row-major pixels
    labels = torch.arange(h * w, device=frames.device).repeat(b)
    for _ in range(h * w):  # ends when nothing changes; each pass that changes a label raises it
        before = labels
        labels = _spread(_spread(labels, across, n_across), along, n_down)
        if torch.equal(labels, before):
            break
    return labels.view(b, h, w)


def region_mean_flow(
    flow_px: torch.Tensor,
    frames: torch.Tensor,
    labels: torch.Tensor | None = None,
    still_colours: torch.Tensor | None = None,
) -> torch.Tensor:
    """Each pixel's flow replaced by the mean flow of its region (``regions``; ``labels`` when the
    caller has them).

    A predicted field varies a little across an object; rounded per pixel, neighbours would land a
    pixel apart and crack it into rings (measured: balls shredded within 2 steps). With one mean per
    region, an object of one flat colour moves as one, by one whole-pixel step; the backdrop, one
    vast region, moves by the mean of a field that is zero nearly everywhere on it, which is none.

    A thin piece of scenery is not so safe: Balls' goal pole, 3 px wide, beside a falling ball takes
    the ball's move on the fifth of its pixels the predicted field smears it over, a mean of 0.65 px,
    and the whole pole steps down a pixel, out of the fill of what the ball uncovers; a ball in front
    of the pole cuts it in two, and the short piece below the ball moves with it (README, "Scenery
    that stands still"). ``still_colours`` (``[S, 3]`` in [-1, 1]), the scenery colours of a scene
    whose camera does not move, never move, whatever the field says.
    """
    _check(frames, flow_px)
    b, _, h, w = frames.shape
    labels = regions(frames) if labels is None else labels
    region = (torch.arange(b, device=frames.device).view(b, 1, 1) * (h * w) + labels).view(-1)
    flows = flow_px.permute(0, 2, 3, 1).reshape(-1, 2)
    sums = torch.zeros_like(flows).index_add_(0, region, flows)
    ones = torch.ones_like(flows[:, 0])
    counts = torch.zeros_like(ones).index_add_(0, region, ones)
    mean = sums / counts.clamp_min(1.0)[:, None]  # labels without pixels (most) are never read
    out = mean.index_select(0, region).view(b, h, w, 2).permute(0, 3, 1, 2)
    if still_colours is not None and len(still_colours):
        out = out * ~still_mask(frames, still_colours)  # a region is one colour: all of it or none
    return out


def splat_forward(
    frames: torch.Tensor, flow_px: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Move every pixel of ``frames[B, C, H, W]`` by ``flow_px[B, 2, H, W]`` ((u, v) pixels, u to the
    right, v down), rounded to whole pixels. Pixels with a zero move stay; a moving pixel lands over
    whatever stands there (of two that land on one place, one wins) and leaves a hole behind unless
    another lands on it; pixels moved out of the frame are gone.

    Returns the moved frames (holes hold ``HOLE``), the holes ``bool[B, H, W]`` and where pixels
    landed ``bool[B, H, W]``. Whole pixels, not bilinear splats: blending an object's edge into the
    background on every step blurs it away over a long rollout; rounding keeps flat colours flat.
    """
    _check(frames, flow_px)
    b, c, h, w = frames.shape
    step = flow_px.round().long()
    moving = (step != 0).any(1)  # [B, H, W]
    v, u = torch.meshgrid(
        torch.arange(h, device=frames.device), torch.arange(w, device=frames.device), indexing="ij"
    )
    du, dv = u[None] + step[:, 0], v[None] + step[:, 1]
    lands = moving & (du >= 0) & (du < w) & (dv >= 0) & (dv < h)
    out = torch.where(moving[:, None], torch.full_like(frames, HOLE), frames)
    out = out.permute(0, 2, 3, 1).reshape(-1, c).clone()  # [B*H*W, C]
    dest = ((torch.arange(b, device=frames.device).view(b, 1, 1) * h + dv) * w + du)[lands]
    out[dest] = frames.permute(0, 2, 3, 1)[lands]
    landed = torch.zeros(b * h * w, dtype=torch.bool, device=frames.device)
    landed[dest] = True
    landed = landed.view(b, h, w)
    return out.view(b, h, w, c).permute(0, 3, 1, 2), moving & ~landed, landed


def still_mask(frames: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    """``bool[B, 1, H, W]``: the pixels of ``frames[B, C, H, W]`` within ``COLOUR_TOL`` of one of
    ``colours[S, C]``. One colour at a time: broadcasting all at once builds an ``[B, S, C, H, W]``
    temporary and measured 4x slower for 64 worlds."""
    mask = torch.zeros(frames.shape[0], 1, *frames.shape[2:], dtype=torch.bool, device=frames.device)
    for colour in colours.to(frames):
        mask |= (frames - colour[:, None, None]).abs().amax(1, keepdim=True) < COLOUR_TOL
    return mask


def scenery_behind(
    context: torch.Tensor, still_colours: torch.Tensor, context_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """What stands behind each pixel, as far as ``context`` (``[B, K, C, H, W]``, oldest first) saw:
    the pixel's colour in the latest frame where it showed one of ``still_colours``, else ``HOLE``.
    A frame ``context_mask[B, K]`` marks False is padding, not something seen: it is skipped (text to
    video starts from K copies of the data's mean frame, whose blurred scenery is not this world's).

    In a scene whose scenery never moves, the pole a ball passes in front of is still there behind
    it; filled from its neighbours alone, the pixels the ball uncovers take the backdrop beside the
    pole, and a ball that falls past the pole cuts it (README, "Scenery that stands still")."""
    b, k, c, h, w = context.shape
    behind = torch.full((b, c, h, w), HOLE, dtype=context.dtype, device=context.device)
    real = None if context_mask is None else context_mask.to(device=context.device, dtype=torch.bool)
    for i, frame in enumerate(context.unbind(1)):
        seen = still_mask(frame, still_colours)
        if real is not None:
            seen = seen & real[:, i].view(b, 1, 1, 1)
        behind = torch.where(seen, frame, behind)
    return behind


def fill_holes(frames: torch.Tensor, holes: torch.Tensor, landed: torch.Tensor) -> torch.Tensor:
    """Fill each hole from the scene that stood still around it: a hole pixel takes the colour of a
    neighbour that is known (neither a hole nor a pixel that landed there this step), trying the
    one above, below, left and right in turn, and filled pixels become known, pass after pass.

    What a moving object uncovers is, in a flat-colour scene, almost always the colour around it (the
    backdrop behind a ball, a goal line continuing above and below it); filled so, the change is left
    with only what truly appears. A hole with nothing known around it keeps ``HOLE``.

    Holes are a few pixels in thousands, so the passes walk a list of them, not the whole frame.
    """
    b, c, h, w = frames.shape
    out = frames.permute(0, 2, 3, 1).reshape(-1, c).clone()  # [B*H*W, C]
    known = (~holes & ~landed).reshape(-1)
    todo = holes.reshape(-1).nonzero().squeeze(1)  # flat indices of the pixels left to fill
    row, col = (todo // w) % h, todo % w
    for _ in range(h + w):
        left = todo.numel()
        if left == 0:
            break
        for dv, dh in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            inside = (row + dv >= 0) & (row + dv < h) & (col + dh >= 0) & (col + dh < w)
            src = torch.where(inside, todo + dv * w + dh, todo)
            take = inside & known[src]
            out[todo[take]] = out[src[take]]
            known[todo[take]] = True
            todo, row, col = todo[~take], row[~take], col[~take]
        if todo.numel() == left:  # a pass that fills nothing: what is left has nothing known near it
            break
    return out.view(b, h, w, c).permute(0, 3, 1, 2)


def warp(
    frames: torch.Tensor,
    flow_px: torch.Tensor,
    dither: torch.Tensor | None = None,
    still_colours: torch.Tensor | None = None,
    behind: torch.Tensor | None = None,
) -> torch.Tensor:
    """The generator's warp: each region of ``frames`` moved forward by its mean of ``flow_px`` (or
    left where it is when it has one of ``still_colours``, ``region_mean_flow``), and what the moves
    uncover filled with the scenery seen behind it (``behind``, from ``scenery_behind``, where it
    is known) or from the scene around it.

    A region's move is rounded to whole pixels; with ``dither`` (``[B, 2, H, W]`` uniform in [0, 1),
    one value per region taken where the region's label points) it is ``floor(move + dither)``,
    whose expectation is the move itself: a ball moving a third of a pixel a step then moves one
    pixel a third of the time, instead of never moving and leaving its edges to the change.
    """
    b, _, h, w = frames.shape
    labels = regions(frames)
    mean = region_mean_flow(flow_px, frames, labels, still_colours)
    if dither is None:
        step = mean.round()
    else:
        _check(frames, dither)
        at_label = dither.flatten(2).gather(2, labels.view(b, 1, h * w).expand(b, 2, h * w))
        step = (mean + at_label.view(b, 2, h, w)).floor()
    moved, holes, landed = splat_forward(frames, step)
    if behind is not None:
        seen = holes & (behind != HOLE).any(1)
        moved = torch.where(seen[:, None], behind, moved)
        holes = holes & ~seen
    return fill_holes(moved, holes, landed)
