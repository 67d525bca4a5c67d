"""Offscreen MuJoCo rendering that survives model rebuilds.

``mujoco.Renderer`` creates an OpenGL context and an ``MjrContext`` per model: about 50-70 ms,
paid at every reset because each reset builds a new model from its spec. Our scenes have no
textures, meshes, height fields or skins, so the GPU-side context holds nothing model-specific
beyond visual settings that every worldsim scene shares; this renderer keeps one GL context and
one ``MjrContext`` and rebuilds the context only when a model needs it.
"""

from __future__ import annotations

import mujoco
import numpy as np


def _context_key(model: mujoco.MjModel) -> tuple:
    """What an ``MjrContext`` depends on: uploaded assets and the visual quality settings."""
    vis = model.vis
    return (
        model.ntex,
        model.nmesh,
        model.nhfield,
        model.nskin,
        model.nflex,
        vis.global_.offwidth,
        vis.global_.offheight,
        vis.quality.shadowsize,
        vis.quality.offsamples,
        vis.quality.numslices,
        vis.quality.numstacks,
        vis.quality.numquads,
    )


class OffscreenRenderer:
    """RGB and segmentation frames of fixed cameras, at one resolution, for any worldsim model."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = int(width), int(height)
        self._gl = mujoco.GLContext(self.width, self.height)
        self._gl.make_current()
        self._ctx: mujoco.MjrContext | None = None
        self._ctx_key: tuple | None = None
        self._model: mujoco.MjModel | None = None
        self._scene: mujoco.MjvScene | None = None
        self._option = mujoco.MjvOption()
        self._camera = mujoco.MjvCamera()
        self._camera.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self._rect = mujoco.MjrRect(0, 0, self.width, self.height)
        self._rgb = np.empty((self.height, self.width, 3), np.uint8)

    def set_model(self, model: mujoco.MjModel) -> None:
        """Use ``model`` from now on; cheap unless its assets or visual settings differ."""
        self._gl.make_current()
        key = _context_key(model)
        needs_assets = any(key[:5])
        if self._ctx is None or needs_assets or key != self._ctx_key:
            if self._ctx is not None:
                self._ctx.free()
            self._ctx = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_50)
            mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._ctx)
            self._ctx_key = None if needs_assets else key
        self._scene = mujoco.MjvScene(model, maxgeom=model.ngeom + 64)
        self._model = model

    def _draw(self, data: mujoco.MjData, camera_id: int, segmentation: bool) -> np.ndarray:
        if self._model is None:
            raise RuntimeError("set_model() before rendering")
        self._gl.make_current()
        self._camera.fixedcamid = camera_id
        mujoco.mjv_updateScene(
            self._model, data, self._option, None, self._camera, mujoco.mjtCatBit.mjCAT_ALL, self._scene
        )
        self._scene.flags[mujoco.mjtRndFlag.mjRND_SEGMENT] = segmentation
        self._scene.flags[mujoco.mjtRndFlag.mjRND_IDCOLOR] = segmentation
        mujoco.mjr_render(self._rect, self._scene, self._ctx)
        mujoco.mjr_readPixels(self._rgb, None, self._rect, self._ctx)
        return np.flipud(self._rgb)  # OpenGL rows run bottom-up

    def render(self, data: mujoco.MjData, camera_id: int) -> np.ndarray:
        """RGB frame ``uint8[H, W, 3]`` from fixed camera ``camera_id``."""
        return self._draw(data, camera_id, segmentation=False).copy()

    def segment(self, data: mujoco.MjData, camera_id: int, geom_to_label: np.ndarray) -> np.ndarray:
        """Per-pixel labels ``int32[H, W]``: ``geom_to_label[geom id]``, 0 where no geom is drawn."""
        rgb = self._draw(data, camera_id, segmentation=True).astype(np.int64)
        segid = rgb[..., 0] + (rgb[..., 1] << 8) + (rgb[..., 2] << 16)  # 0 = background, else scene geom + 1
        scene = self._scene
        lut = np.zeros(scene.ngeom + 1, np.int32)
        for i in range(scene.ngeom):
            g = scene.geoms[i]
            if g.segid >= 0 and g.objtype == mujoco.mjtObj.mjOBJ_GEOM:
                lut[g.segid + 1] = geom_to_label[g.objid]
        return lut[np.clip(segid, 0, scene.ngeom)]

    def close(self) -> None:
        if self._ctx is not None:
            self._gl.make_current()
            self._ctx.free()
            self._ctx = None
        if self._gl is not None:
            self._gl.free()
            self._gl = None
