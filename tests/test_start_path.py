"""A one-frame start's tracks go back along the prompt's free paths: the paths are MuJoCo's flights,
seen where MuJoCo draws them, and the fill puts them only in the frames before an episode's start."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from worldsim import scenes
from worldsim.model.object_dynamics import fill_before_start, object_tracks, start_path_px
from worldsim.model.script_map import ScriptMapConfig
from worldsim.physics import make_simulator
from worldsim.scenes.colours import rgb_uint8

STEPS = 3  # a context of 4 frames has 3 before a one-frame start


def _flights(count: int) -> list[tuple]:
    """MuJoCo's first ``STEPS`` steps (no action) of ``count`` sampled Balls worlds: each world's spec,
    the balls' positions ``[STEPS + 1, balls, 2]`` (x, z) and its frames."""
    rng = np.random.default_rng(3)
    sim = make_simulator("balls", "mujoco", 64, 64)
    out = []
    for _ in range(count):
        spec = scenes.sample("balls", rng)
        sim.reset(spec)
        positions, frames = [sim.state()["pos_m"]], [sim.render()]
        for _ in range(STEPS):
            sim.step(np.zeros(2, np.float32))
            positions.append(sim.state()["pos_m"])
            frames.append(sim.render())
        out.append((spec, np.stack(positions), np.stack(frames)))
    sim.close()
    return out


def test_a_free_path_is_mujocos_flight_until_a_ball_touches_something():
    free, errors = 0, []
    for spec, positions, _ in _flights(12):
        path = np.stack([scenes.free_path(spec, j / 10.0) for j in range(STEPS + 1)])[..., [0, 2]]
        assert np.allclose(path[0], positions[0])  # where the prompt starts them
        error = np.abs(path - positions).max(axis=(0, 2))  # per ball, over the steps
        errors += error.tolist()
        free += int((error < 5e-3).sum())
    # most balls fly free for 0.3 s, and those follow the parabola to the millimetre (gravity, the
    # prompt's velocity); the rest bounced off a wall, the floor or each other
    assert free >= 0.5 * len(errors), errors
    with pytest.raises(ValueError, match="free path"):
        scenes.free_path(scenes.sample("push", np.random.default_rng(0)), 0.1)


def test_the_path_is_drawn_where_mujoco_draws_the_balls():
    # Thrown the other way, a ball's path before the start is its flight after it (the parabola is
    # even in time but for the velocity): so start_path_px of the reversed prompt must give the
    # pixel moves MuJoCo's frames show over the first steps, for the balls that fly free
    camera = ScriptMapConfig(**scenes.scene_camera("balls", 64, 64))
    errors = []
    for spec, positions, frames in _flights(12):
        reversed_ = replace(
            spec, balls=tuple(replace(b, vx_mps=-b.vx_mps, vz_mps=-b.vz_mps) for b in spec.balls)
        )
        offsets = start_path_px(scenes.caption(reversed_), "balls", 3, STEPS, camera)
        colours = torch.tensor([[rgb_uint8(b.colour) for b in spec.balls]])
        centres, _ = object_tracks(torch.from_numpy(frames)[None], colours)
        moved = (centres[0, 1:] - centres[0, :1]).permute(1, 0, 2).numpy()  # [balls, STEPS, 2]
        path = np.stack([scenes.free_path(spec, j / 10.0) for j in range(STEPS + 1)])[..., [0, 2]]
        flying = np.abs(path - positions).max(axis=(0, 2)) < 5e-3
        seen = ~np.isnan(moved).any(axis=(1, 2))
        for n in np.flatnonzero(flying & seen):
            errors.append(np.abs(offsets[n] - moved[n]).max())
    assert len(errors) >= 10
    # within a fraction of a pixel (the centroid of a disc drawn on whole pixels moves in steps;
    # measured: 0.18 px on average over 11 free flights, at most 0.27)
    assert np.mean(errors) < 0.3 and max(errors) < 0.5, errors


def test_the_fill_goes_only_into_the_frames_before_an_episodes_start():
    centroid = torch.full((3, 4, 1, 2), float("nan"))
    centroid[:, 3] = torch.tensor([10.0, 20.0])  # a one-frame start: its real frame is the last
    centroid[1] = torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [4.0, 4.0]])[:, None]  # all real
    centroid[2, 2] = torch.tensor([9.0, 19.0])  # two real frames
    mask = torch.tensor([[0, 0, 0, 1], [1, 1, 1, 1], [0, 0, 1, 1]], dtype=torch.bool)
    before = torch.tensor([[-1.0, 0.5], [-2.0, 1.5], [-3.0, 3.0]]).expand(3, 1, 3, 2)  # 1, 2, 3 steps before
    filled, whole = fill_before_start(centroid, mask, before)
    assert whole.all()
    torch.testing.assert_close(
        filled[0, :, 0], torch.tensor([[7.0, 23.0], [8.0, 21.5], [9.0, 20.5], [10.0, 20.0]])
    )
    torch.testing.assert_close(filled[1], centroid[1])  # nothing before a start: nothing filled
    torch.testing.assert_close(
        filled[2, :, 0], torch.tensor([[7.0, 20.5], [8.0, 19.5], [9.0, 19.0], [10.0, 20.0]])
    )
    # padding after a real frame is not an episode's start, and no real frame is nothing to go back from
    odd = torch.tensor([[0, 1, 0, 1], [0, 0, 0, 0]], dtype=torch.bool)
    filled, whole = fill_before_start(centroid[:2], odd, before[:2])
    assert torch.equal(whole, odd)
    torch.testing.assert_close(filled, centroid[:2], equal_nan=True)


def test_a_generator_of_a_family_without_free_paths_is_refused_the_start_path():
    from worldsim.model.world_model import WorldModelConfig, check_start_path

    camera = ScriptMapConfig(**scenes.scene_camera("push", 64, 64))
    cfg = WorldModelConfig(
        family="push",
        flow_channels=[8, 8],
        object_dynamics=True,
        object_max=1,
        object_properties=1,
        script_map_camera=camera,
        object_start_path=True,
    )
    with pytest.raises(ValueError, match="free path"):
        check_start_path(cfg)
    check_start_path(
        replace(
            cfg, family="balls", script_map_camera=ScriptMapConfig(**scenes.scene_camera("balls", 64, 64))
        )
    )
