"""The shared-context renderer draws exactly what ``mujoco.Renderer`` draws, across model rebuilds."""

import mujoco
import numpy as np
import pytest
from conftest import FAMILIES

from worldsim.physics import make_simulator
from worldsim.scenes import family_of, sample


@pytest.mark.parametrize("family", FAMILIES)
def test_frames_and_masks_equal_mujoco_renderer_after_rebuilds(family):
    sim = make_simulator(family, "mujoco", 48, 40)
    rng = np.random.default_rng(5)
    for _ in range(3):  # each reset builds a new model; the GL context is reused
        sim.reset(sample(family, rng))
        for _ in range(3):
            sim.step(np.array([0.4, 0.6]))
        ours, mask = sim.render(), sim.segment()
        cam = family_of(family).cameras[0]
        with mujoco.Renderer(sim.model, 40, 48) as ref:
            cam_id = sim._place_camera(cam.name)
            ref.update_scene(sim.data, camera=cam_id)
            np.testing.assert_array_equal(ours, ref.render())
            ref.enable_segmentation_rendering()
            ref.update_scene(sim.data, camera=cam_id)
            geom = ref.render()[..., 0]
        expected = np.where(geom >= 0, sim._geom_to_object[np.clip(geom, 0, None)], 0)
        np.testing.assert_array_equal(mask, expected)
        assert set(np.unique(mask)) >= {0, 1}  # the agent / first object is in view
    sim.close()
