"""Objects found by colour in frames, their centroids, and how far generated ones are from the truth.

Every object of a worldsim scene is drawn in one flat colour that no scenery uses, so an object is
found in any frame, truth or generated, by classifying each pixel to its nearest palette colour.
Two refinements make this clean on MuJoCo frames and robust on generated ones:

- Scenery blends. MuJoCo renders with 4x multisampling, so a pixel on an edge is a blend of the two
  colours that meet there, and a blend of two scenery colours can lie nearer to an object colour
  than to either of its own: half orange goal, half grey backdrop is nearest to yellow. The
  reference colours therefore include the 50 % blend of every pair of scenery colours, classified
  as scenery (a blend lying within ``BLEND_CLEARANCE`` of an object colour would be left out, to
  keep that colour's tolerance; none does with the current colours). With them, no 25/50/75 %
  blend of two palette colours is classified as a third object (``tests/test_metrics_objects.py``
  checks every pair in every family).
- Opening. An object keeps only pixels that lie in a 2x2 block of its own pixels (a morphological
  opening): isolated pixels that noise pushes to an object colour, and one-pixel-wide lines of
  blends along an object's edge that fall nearest to another object's colour, are dropped. Objects
  are at least ~8 px across at 64x64 in every family, so they lose only single-pixel protrusions.

Centroids are the mean pixel centre of the opened mask. On MuJoCo frames they lie within a few
tenths of a pixel of the projected object centre (the parsing floor, measured in
``tests/test_metrics_objects.py``); the remainder is perspective (the visible faces of a box or a
cylinder are not centred on its centre) and edge pixels whose blend falls nearer to the scenery.

Pixel coordinates follow ``worldsim.physics.camera``: u to the right, v down, origin at the top-left
corner of the top-left pixel, so the centre of pixel (row i, column j) is (j + 0.5, i + 0.5).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from worldsim.scenes import drive, family_of, push
from worldsim.scenes.colours import rgb_uint8

if TYPE_CHECKING:
    from worldsim.physics.camera import CameraParams

MIN_VISIBLE_PX = 4
"""An object is visible when its mask holds at least this many pixels: one 2x2 block, which is the
least that survives the opening, so any object the extractor keeps at all counts as visible."""

BLEND_CLEARANCE = 60.0
"""RGB distance a scenery blend must keep from every object colour (half of it, 30 levels, is then
the object colour's tolerance towards the blend)."""

DEFAULT_HORIZONS = (30, 100)
"""Steps over which summaries average: 3 s and 10 s at the 10 Hz control rate."""

SCENERY: dict[str, tuple[str, ...]] = {
    "balls": ("backdrop", "floor", "wall", "goal"),
    "push": ("table", "rim", "goal"),
    # "wall" is the material of an absent lead car or pedestrian (parked far out of view).
    "drive": ("grass", "road", "marking", "wall"),
}
"""Scenery colours each family draws (objects' colours come from the spec)."""


def still_scenery_colours(family: str) -> list[list[int]]:
    """The uint8 RGB colours of ``family``'s scenery, which never moves in a frame when its camera is
    fixed: what a generator's warp may leave where it is (``WorldModelConfig.flow_still_colours``).
    A family whose camera follows a moving body (Drive) has none that stand still: a ``ValueError``."""
    from worldsim.scenes import FAMILIES
    from worldsim.scenes.colours import rgb_uint8

    if family not in FAMILIES:
        raise ValueError(f"unknown scene family {family!r}; families: {', '.join(FAMILIES)}")
    if any(rig.follow is not None for rig in FAMILIES[family].cameras):
        raise ValueError(f"{family}'s camera follows a moving body: its scenery moves in the frame")
    return [list(rgb_uint8(name)) for name in SCENERY[family]]


_LUT_BITS = 6  # colours are looked up on a 64^3 grid: within 2 levels per channel of exact


# ---------------------------------------------------------------------------------------------
# palette


@dataclass(frozen=True)
class Palette:
    """The colours a scene draws and which object owns each.

    ``colours`` are names from ``worldsim.scenes.colours``; ``rgb`` their uint8 values; ``owner[c]``
    is the index (into ``objects``) of the object drawn in colour ``c``, or -1 for scenery. An object
    may own several colours (the ego car's body and its tyres).
    """

    colours: tuple[str, ...]
    rgb: tuple[tuple[int, int, int], ...]
    owner: tuple[int, ...]
    objects: tuple[str, ...]
    object_ids: tuple[int, ...]

    @staticmethod
    def build(objects: Sequence[tuple[str, int, Sequence[str]]], scenery: Sequence[str]) -> Palette:
        """A palette from ``(object name, object id, colour names)`` triples and scenery colour names."""
        colours, owner = list(scenery), [-1] * len(scenery)
        for k, (_, _, names) in enumerate(objects):
            colours += list(names)
            owner += [k] * len(names)
        rgb = tuple(rgb_uint8(c) for c in colours)
        if len(set(rgb)) != len(rgb):
            raise ValueError(f"palette colours must be distinct, got {dict(zip(colours, rgb, strict=True))}")
        return Palette(
            colours=tuple(colours),
            rgb=rgb,
            owner=tuple(owner),
            objects=tuple(o[0] for o in objects),
            object_ids=tuple(int(o[1]) for o in objects),
        )

    @property
    def n_objects(self) -> int:
        return len(self.objects)


def palette_for(spec: Any) -> Palette:
    """The palette of a scene: its family's scenery colours and its objects, in ``FAMILY.objects`` order.

    The Push pusher is an object drawn in the scenery colour ``"pusher"``; the Drive ego car owns its
    tyres (drawn in that same colour) as segmentation does.
    """
    fam = family_of(spec)
    objects = []
    for info in fam.objects(spec):
        names = [info.colour]
        if fam.name == "drive" and info.name == "ego":
            names.append("pusher")  # the tyres
        objects.append((info.name, info.object_id, names))
    return Palette.build(objects, SCENERY[fam.name])


@dataclass(frozen=True)
class _Lookup:
    owner: np.ndarray  # int16[64^3]: quantised colour -> object index, -1 for scenery
    references: np.ndarray  # float[R, 3]: pure colours, then the kept scenery blends
    reference_owner: np.ndarray  # int[R]


@functools.lru_cache(maxsize=32)
def _lookup(palette: Palette) -> _Lookup:
    pure = np.asarray(palette.rgb, float)
    owner = np.asarray(palette.owner)
    objects = pure[owner >= 0]
    scenery = np.flatnonzero(owner < 0)
    blends = [(pure[i] + pure[j]) / 2 for n, i in enumerate(scenery) for j in scenery[n + 1 :]]
    blends = [
        b for b in blends if len(objects) == 0 or np.linalg.norm(objects - b, axis=1).min() >= BLEND_CLEARANCE
    ]
    refs = np.concatenate([pure, np.reshape(blends, (-1, 3))])
    ref_owner = np.concatenate([owner, np.full(len(blends), -1)])

    levels = 1 << _LUT_BITS
    step = 256 // levels
    axis = np.arange(levels, dtype=np.float32) * step + (step - 1) / 2
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    r = refs.astype(np.float32)
    # |g - r|^2 = |g|^2 - 2 g.r + |r|^2, and |g|^2 is the same for every reference r
    nearest = ((r**2).sum(1)[None, :] - 2.0 * grid @ r.T).argmin(1)
    return _Lookup(ref_owner[nearest].astype(np.int16), refs, ref_owner)


def colour_tolerance(palette: Palette) -> float:
    """How far (RGB distance) an object's colour may drift and still be classified as that object:
    half the distance from an object colour to the nearest reference owned by something else, less
    up to 3.5 levels where the 64^3 lookup grid rounds a colour towards that boundary."""
    lk = _lookup(palette)
    tol = np.inf
    for c, rgb in zip(lk.reference_owner, lk.references, strict=True):
        if c >= 0:
            others = lk.references[lk.reference_owner != c]
            tol = min(tol, np.linalg.norm(others - rgb, axis=1).min() / 2)
    return float(tol)


def classify(frames_uint8: np.ndarray, palette: Palette) -> np.ndarray:
    """The owner of every pixel by nearest colour, ``int16[..., H, W]``: an object index, or -1 for
    scenery (before the opening; ``object_masks`` is what metrics use)."""
    f = np.asarray(frames_uint8)
    if f.dtype != np.uint8 or f.ndim < 3 or f.shape[-1] != 3:
        raise ValueError(f"frames must be uint8[..., H, W, 3], got {f.dtype}{list(f.shape)}")
    q = f >> (8 - _LUT_BITS)
    idx = (
        (q[..., 0].astype(np.int32) << (2 * _LUT_BITS))
        | (q[..., 1].astype(np.int32) << _LUT_BITS)
        | q[..., 2]
    )
    return _lookup(palette).owner[idx]


def _open_2x2(mask: np.ndarray) -> np.ndarray:
    """Keep the pixels of boolean maps ``[..., H, W]`` that lie in a 2x2 block of set pixels."""
    block = mask[..., :-1, :-1] & mask[..., 1:, :-1] & mask[..., :-1, 1:] & mask[..., 1:, 1:]
    out = np.zeros_like(mask)
    out[..., :-1, :-1] |= block
    out[..., 1:, :-1] |= block
    out[..., :-1, 1:] |= block
    out[..., 1:, 1:] |= block
    return out


def object_masks(frames_uint8: np.ndarray, palette: Palette) -> np.ndarray:
    """Boolean masks ``bool[..., N, H, W]`` of the palette's N objects, from colour alone."""
    owner = classify(frames_uint8, palette)
    ks = np.arange(palette.n_objects, dtype=owner.dtype).reshape(-1, 1, 1)
    return _open_2x2(owner[..., None, :, :] == ks)


# ---------------------------------------------------------------------------------------------
# per-object measurements


@dataclass(frozen=True)
class ObjectTracks:
    """What the colour extractor sees of each object, per frame. Leading axes follow the input
    (``[T]`` for a video, none for a single frame), then N objects in palette order.

    ``count_px``: mask pixels; ``centroid_px``: mean pixel centre (u, v), NaN when not visible;
    ``bbox_px``: (u_min, v_min, u_max, v_max) pixel edges of the mask, NaN when empty;
    ``visible``: ``count_px >= min_px``; ``image_hw``: frame height and width.
    """

    objects: tuple[str, ...]
    count_px: np.ndarray
    centroid_px: np.ndarray
    bbox_px: np.ndarray
    visible: np.ndarray
    min_px: int
    image_hw: tuple[int, int]


def extract_objects(frames_uint8: np.ndarray, palette: Palette, min_px: int = MIN_VISIBLE_PX) -> ObjectTracks:
    """Find every palette object in a frame ``uint8[H, W, 3]`` or a video ``uint8[T, H, W, 3]``."""
    masks = object_masks(frames_uint8, palette)
    lead, (n, h, w) = masks.shape[:-3], masks.shape[-3:]
    masks = masks.reshape(-1, n, h, w)

    cols = masks.sum(2, dtype=np.int64)  # [F, N, W] pixels per column
    rows = masks.sum(3, dtype=np.int64)  # [F, N, H]
    count = cols.sum(-1)
    visible = count >= min_px
    with np.errstate(invalid="ignore", divide="ignore"):
        centroid = np.stack([cols @ (np.arange(w) + 0.5), rows @ (np.arange(h) + 0.5)], -1) / count[..., None]
    centroid[~visible] = np.nan

    has = count > 0
    bbox = np.full((*has.shape, 4), np.nan)
    c, r = cols[has] > 0, rows[has] > 0
    bbox[has, 0] = c.argmax(-1)
    bbox[has, 1] = r.argmax(-1)
    bbox[has, 2] = w - c[:, ::-1].argmax(-1)
    bbox[has, 3] = h - r[:, ::-1].argmax(-1)
    return ObjectTracks(
        objects=palette.objects,
        count_px=count.reshape(*lead, n),
        centroid_px=centroid.reshape(*lead, n, 2),
        bbox_px=bbox.reshape(*lead, n, 4),
        visible=visible.reshape(*lead, n),
        min_px=int(min_px),
        image_hw=(int(h), int(w)),
    )


# ---------------------------------------------------------------------------------------------
# from pixels to metres


@dataclass(frozen=True)
class Plane:
    """The points ``p`` (world, metres) with ``normal . p = offset_m``."""

    normal: tuple[float, float, float]
    offset_m: float

    @staticmethod
    def horizontal(z_m: float) -> Plane:
        return Plane((0.0, 0.0, 1.0), float(z_m))

    @staticmethod
    def vertical_y(y_m: float) -> Plane:
        return Plane((0.0, 1.0, 0.0), float(y_m))


def pixel_to_plane(uv_px: np.ndarray, camera: CameraParams, plane: Plane) -> np.ndarray:
    """World points ``[..., 3]`` (m) where the viewing rays of pixels ``uv_px[..., 2]`` meet ``plane``.

    The inverse of ``camera.project`` for points on the plane (only ``camera.K`` and
    ``camera.world_to_cam`` are read). NaN where a ray is parallel to the
    plane, meets it behind the camera, or the pixel is NaN.
    """
    uv = np.asarray(uv_px, dtype=float)
    R, t = camera.world_to_cam[:3, :3], camera.world_to_cam[:3, 3]
    origin = -R.T @ t
    homog = np.concatenate([uv, np.ones((*uv.shape[:-1], 1))], -1)
    ray = homog @ np.linalg.inv(camera.K).T @ R  # camera-frame directions turned into world ones
    n = np.asarray(plane.normal, dtype=float)
    denom = ray @ n
    with np.errstate(invalid="ignore", divide="ignore"):
        s = (plane.offset_m - origin @ n) / denom
    s = np.where((np.abs(denom) > 1e-12) & (s > 0), s, np.nan)
    return origin + s[..., None] * ray


def object_planes(spec: Any) -> tuple[Plane, ...]:
    """The plane each object's centre moves in, in ``palette_for(spec)`` order: balls on y = 0; the
    Push object and pusher, the Drive cars and pedestrian at their centres' constant heights."""
    fam = family_of(spec).name
    heights = {
        "object": push.OBJECT_HALF_HEIGHT_M,
        "pusher": push.PUSHER_HALF_HEIGHT_M + 0.002,
        "ego": drive.CHASSIS_Z_M,
        "lead": drive.CHASSIS_Z_M,
        "ped": drive.PED_HALF_HEIGHT_M,
    }
    return tuple(
        Plane.vertical_y(0.0) if fam == "balls" else Plane.horizontal(heights[o.name])
        for o in family_of(spec).objects(spec)
    )


def true_points_m(spec: Any, state: dict[str, np.ndarray]) -> np.ndarray:
    """Objects' centres ``[..., N, 3]`` (world, m) from a state dict, in ``palette_for(spec)`` order.

    ``state`` is one ``Simulator.state()`` or the same keys with a leading time axis.
    """
    fam = family_of(spec).name
    planes = object_planes(spec)
    if fam == "balls":
        xz = np.asarray(state["pos_m"], dtype=float)
        return np.stack([xz[..., 0], np.zeros_like(xz[..., 0]), xz[..., 1]], -1)
    keys = {"object": "object_pos_m", "pusher": "pusher_pos_m", "ego": "ego_pos_m"}
    keys |= {"lead": "lead_pos_m", "ped": "ped_pos_m"}
    out = []
    for info, plane in zip(family_of(spec).objects(spec), planes, strict=True):
        xy = np.asarray(state[keys[info.name]], dtype=float)
        out.append(np.concatenate([xy, np.full((*xy.shape[:-1], 1), plane.offset_m)], -1))
    return np.stack(out, -2)


def lift_centroids(
    centroid_px: np.ndarray, cameras: CameraParams | Sequence[CameraParams], planes: Sequence[Plane]
) -> np.ndarray:
    """Centroids ``[T, N, 2]`` (px) lifted to world points ``[T, N, 3]`` (m) on each object's plane.

    ``cameras`` is one camera for all steps (fixed cameras) or one per step (the Drive camera
    follows the ego car).
    """
    c = np.asarray(centroid_px, dtype=float)
    per_step = isinstance(cameras, Sequence)
    if per_step and len(cameras) != c.shape[0]:
        raise ValueError(
            f"got {len(cameras)} cameras for {c.shape[0]} steps; pass one camera or one per step"
        )
    if len(planes) != c.shape[-2]:
        raise ValueError(f"got {len(planes)} planes for {c.shape[-2]} objects; pass one plane per object")
    out = np.empty((*c.shape[:-1], 3))
    for k, plane in enumerate(planes):
        if per_step:
            for t, cam in enumerate(cameras):
                out[t, k] = pixel_to_plane(c[t, k], cam, plane)
        else:
            out[:, k] = pixel_to_plane(c[:, k], cameras, plane)
    return out


# ---------------------------------------------------------------------------------------------
# generated vs truth


@dataclass(frozen=True)
class CentroidErrors:
    """Per-step, per-object distance between truth and generated centroids, ``[T, N]``.

    Rule, per step and object:
    - visible in both: the distance between the centroids (px; and in m if cameras were given);
    - visible in truth only (``vanished``) or in the generated frame only (``ghost``): ``penalty_px``,
      and NaN in metres (a missing object has no position); counted separately;
    - visible in neither: NaN, skipped by every mean.
    """

    objects: tuple[str, ...]
    error_px: np.ndarray
    error_m: np.ndarray | None
    vanished: np.ndarray
    ghost: np.ndarray
    matched: np.ndarray
    penalty_px: float
    # the centres lifted [T, N, 3] (m, NaN when not seen), when cameras were given
    truth_m: np.ndarray | None = None
    gen_m: np.ndarray | None = None

    @property
    def steps(self) -> int:
        return int(self.error_px.shape[0])

    def curve_px(self) -> np.ndarray:
        """Mean error over scored objects per step ``[T]`` (NaN at steps with none)."""
        return nanmean(self.error_px, axis=1)

    def summary(self, horizons: Sequence[int] = DEFAULT_HORIZONS) -> dict[str, Any]:
        """Means over objects and the first ``h`` steps for each horizon (and ``"all"`` steps), with
        vanish / ghost / matched counts. A horizon longer than the video gives ``None`` values."""
        out: dict[str, Any] = {"penalty_px": self.penalty_px, "steps": self.steps}
        for h in (*horizons, None):
            key = "all" if h is None else f"h{h}"
            if h is not None and h > self.steps:
                out[key] = {
                    "error_px": None,
                    "error_m": None,
                    "vanished": None,
                    "ghost": None,
                    "matched": None,
                }
                continue
            sl = slice(None) if h is None else slice(0, h)
            out[key] = {
                "error_px": json_float(nanmean(self.error_px[sl])),
                "error_m": None if self.error_m is None else json_float(nanmean(self.error_m[sl])),
                "vanished": int(self.vanished[sl].sum()),
                "ghost": int(self.ghost[sl].sum()),
                "matched": int(self.matched[sl].sum()),
            }
        return out

    def curves(self) -> dict[str, Any]:
        """Per-step curves as JSON-ready lists: mean error (px, m), vanish and ghost counts, and the
        error of each object."""
        return {
            "error_px": [json_float(x) for x in self.curve_px()],
            "error_m": None
            if self.error_m is None
            else [json_float(x) for x in nanmean(self.error_m, axis=1)],
            "vanished": self.vanished.sum(1).tolist(),
            "ghost": self.ghost.sum(1).tolist(),
            "error_px_by_object": {
                name: [json_float(x) for x in self.error_px[:, k]] for k, name in enumerate(self.objects)
            },
        }


def default_penalty_px(height: int, width: int) -> float:
    """Half the image diagonal: a little worse than guessing a uniformly random spot in the image
    (whose mean distance to a point is about 0.52 of a square image's side, against 0.71 here)."""
    return 0.5 * float(np.hypot(height, width))


def compare_tracks(
    truth: ObjectTracks,
    gen: ObjectTracks,
    penalty_px: float | None = None,
    cameras: CameraParams | Sequence[CameraParams] | None = None,
    planes: Sequence[Plane] | None = None,
) -> CentroidErrors:
    """Centroid errors between two videos' tracks ``[T, N]`` (see ``CentroidErrors`` for the rule).

    With ``cameras`` (one, or one per step) and ``planes`` (one per object, e.g. ``object_planes``)
    errors are also given in metres, both centroids lifted through the truth camera. The Drive
    camera follows the ego car, in the generated world as in the truth, so there pixel and metre
    errors are positions relative to the ego car's camera.
    """
    if truth.objects != gen.objects or truth.centroid_px.shape != gen.centroid_px.shape:
        raise ValueError(
            f"tracks differ: truth {truth.objects} {truth.centroid_px.shape[:-1]}, "
            f"generated {gen.objects} {gen.centroid_px.shape[:-1]}; extract both with the same palette"
        )
    if truth.centroid_px.ndim != 3:
        raise ValueError(f"tracks must be of videos [T, N, 2], got {truth.centroid_px.shape}")
    if penalty_px is None:
        penalty_px = default_penalty_px(*truth.image_hw)
    tv, gv = truth.visible, gen.visible
    matched, vanished, ghost = tv & gv, tv & ~gv, ~tv & gv
    err = np.full(tv.shape, np.nan)
    err[matched] = np.linalg.norm(truth.centroid_px - gen.centroid_px, axis=-1)[matched]
    err[vanished | ghost] = penalty_px
    err_m = truth_m = gen_m = None
    if cameras is not None:
        if planes is None:
            raise ValueError("errors in metres need one plane per object as well as the cameras")
        truth_m = lift_centroids(truth.centroid_px, cameras, planes)
        gen_m = lift_centroids(gen.centroid_px, cameras, planes)
        err_m = np.where(matched, np.linalg.norm(truth_m - gen_m, axis=-1), np.nan)
    return CentroidErrors(
        truth.objects, err, err_m, vanished, ghost, matched, float(penalty_px), truth_m, gen_m
    )


def centroid_errors(
    truth_frames: np.ndarray,
    gen_frames: np.ndarray,
    palette: Palette,
    penalty_px: float | None = None,
    cameras: CameraParams | Sequence[CameraParams] | None = None,
    planes: Sequence[Plane] | None = None,
    min_px: int = MIN_VISIBLE_PX,
) -> CentroidErrors:
    """Per-step, per-object centroid error between truth and generated videos ``uint8[T, H, W, 3]``.

    ``penalty_px`` defaults to half the image diagonal (``default_penalty_px``).
    """
    t, g = np.asarray(truth_frames), np.asarray(gen_frames)
    if t.shape != g.shape or t.ndim != 4:
        raise ValueError(f"videos must both be uint8[T, H, W, 3] of one shape, got {t.shape} and {g.shape}")
    return compare_tracks(
        extract_objects(t, palette, min_px), extract_objects(g, palette, min_px), penalty_px, cameras, planes
    )


def nanmean(a: np.ndarray, axis: int | None = None) -> np.ndarray | float:
    """Mean over the non-NaN values, NaN where there are none (and no warning)."""
    a = np.asarray(a, dtype=float)
    n = np.sum(~np.isnan(a), axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nansum(a, axis=axis) / np.where(n == 0, np.nan, n)


def json_float(x: float) -> float | None:
    """``x`` as a float for JSON, ``None`` when it is not finite."""
    x = float(x)
    return None if not np.isfinite(x) else x
