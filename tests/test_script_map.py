"""The script map: the agents a prompt scripts, drawn where they will be in the frame being made."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_odometry import tiny_drive_model

from worldsim.model.odometry import OdometerConfig
from worldsim.model.script_map import SCRIPT_MAP_CHANNELS, ScriptMapConfig, coverage, paint
from worldsim.scenes import script_map_camera, script_of
from worldsim.scenes.drive import DriveSpec, road_markings

CAMERA = ScriptMapConfig(**script_map_camera("drive", 64, 64))
SPEC = DriveSpec(
    ego_colour="red",
    ego_lane=0,
    ego_speed_mps=8.0,
    friction=0.9,
    lead_colour="green",
    lead_gap_m=12.0,
    lead_speed_mps=3.0,
    ped_colour="magenta",
    ped_x_m=22.0,
    ped_start_s=0.5,
    ped_speed_mps=1.6,
    ped_side=-1,
)


def _drive(spec: DriveSpec, steps: int):
    """MuJoCo's frames and the car's x of ``spec`` under full throttle, straight on."""
    from worldsim.physics import make_simulator

    sim = make_simulator("drive", "mujoco", 64, 64)
    sim.reset(spec)
    frames, xs = [sim.render()], [sim.state()["ego_pos_m"][0]]
    for _ in range(steps):
        sim.step(np.array([0.0, 0.6], np.float32))
        frames.append(sim.render())
        xs.append(sim.state()["ego_pos_m"][0])
    sim.close()
    return np.stack(frames), np.asarray(xs)


def _as_image(smap: torch.Tensor) -> np.ndarray:
    """A map's colours where it covers half a pixel or more, as a uint8 frame (black elsewhere)."""
    rgb = (smap[:, 1:] + 1) * 127.5 * (smap[:, :1] > 0.5)
    return rgb.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


def test_the_map_draws_the_scripted_agents_where_mujoco_does_and_not_when_misplaced():
    """Painted from the prompt's spec, the clock and the car's distance, the lead car and the
    pedestrian are where the colour extractor finds them in MuJoCo's frames (within 0.6 px, seen in
    the same frames); with the camera placed 3 m wrong they are not."""
    from worldsim.metrics.objects import extract_objects, palette_for

    frames, xs = _drive(SPEC, 40)
    t = len(frames)
    truth = extract_objects(frames, palette_for(SPEC))
    names = list(truth.objects)
    for camera_x, ok in ((xs, True), (xs + 3.0, False)):
        smap = paint(
            [script_of(SPEC)] * t, torch.arange(t), torch.from_numpy(camera_x).float(), CAMERA, 64, 64
        )
        assert smap.shape == (t, SCRIPT_MAP_CHANNELS, 64, 64)
        drawn = extract_objects(_as_image(smap), palette_for(SPEC))
        for name in ("lead", "ped"):
            j = names.index(name)
            seen, shown = truth.visible[:, j], drawn.visible[:, j]
            assert seen.sum() > 5  # each is in view for a while in this world
            both = seen & shown
            err = np.linalg.norm(truth.centroid_px[both, j] - drawn.centroid_px[both, j], axis=-1)
            if ok:
                assert (seen == shown).mean() > 0.95 and err.mean() < 0.6, (name, err.mean())
            else:
                assert (seen == shown).mean() < 0.95 or err.mean() > 5.0, (name, err.mean())


def test_coverage_is_the_area_of_a_box_and_a_disc():
    boxes = torch.tensor([[[10.0, 14.5, 20.0, 22.0], [30.0, 40.0, 30.0, 40.0]]])
    cover = coverage(boxes, torch.tensor([[False, True]]), 64, 64)
    assert float(cover[0, 0].sum()) == pytest.approx(4.5 * 2.0)
    assert float(cover[0, 1].sum()) == pytest.approx(np.pi * 25, rel=0.02)
    assert float(cover[0, 0, 21, 14]) == pytest.approx(0.5)  # half of that pixel is inside


def test_the_push_map_draws_the_goal_where_mujoco_does():
    """Push's prompt places a goal marker that never moves: the map paints it, in the goal's colour,
    on the pixels MuJoCo draws it on (in every sampled world whose marker nothing covers at the reset),
    and with a goal 0.1 m away it does not."""
    from dataclasses import replace

    from worldsim import scenes
    from worldsim.physics import make_simulator
    from worldsim.scenes.colours import rgb_uint8

    camera = ScriptMapConfig(**script_map_camera("push", 64, 64))
    assert not camera.follows
    goal = np.array(rgb_uint8("goal"))
    sim = make_simulator("push", "mujoco", 64, 64)
    checked = 0
    for seed in range(6):
        spec = scenes.sample("push", np.random.default_rng(seed))
        sim.reset(spec)
        shown = np.abs(sim.render().astype(int) - goal).max(-1) <= 2
        if shown.sum() < 15:  # the pusher or the object stands on it
            continue
        for moved, ok in ((spec, True), (replace(spec, goal_x_m=spec.goal_x_m + 0.1), False)):
            smap = paint([script_of(moved)], torch.tensor([7]), torch.zeros(1), camera, 64, 64)
            painted = smap[0, 0].numpy() > 0.5
            full = smap[0, 0].numpy() > 0.99
            assert full.any() and (np.abs(_as_image(smap)[0][full].astype(int) - goal).max() <= 1)
            iou = (painted & shown).sum() / (painted | shown).sum()
            assert (iou > 0.9) == ok, (seed, ok, iou)
        checked += 1
    sim.close()
    assert checked >= 3


def test_a_scene_without_scripted_agents_has_an_empty_map_and_no_camera():
    from worldsim import scenes

    balls = scenes.sample("balls", np.random.default_rng(0))
    assert script_of(balls)(3.0) == ()
    smap = paint([script_of(balls)], torch.tensor([5]), torch.zeros(1), CAMERA, 64, 64)
    assert not smap.any()
    with pytest.raises(ValueError, match="scripts none"):
        script_map_camera("balls", 64, 64)


def _mapped_model():
    """A small Drive generator with an odometer and a script map, whose vocabulary reads SPEC's caption."""
    from worldsim.scenes import caption

    return tiny_drive_model(
        [caption(SPEC)],
        odometer=True,
        odometer_markings=OdometerConfig(**road_markings(64, 64)),
        script_map=True,
        script_map_camera=CAMERA,
    )


def test_a_generator_shown_the_map_needs_scripts_reads_them_and_its_camera_runs_one_step_on():
    """The map changes the frame made once the U-Net has weights on it, the scripts are required,
    and the map is drawn with the camera one step past the last context frame."""
    from worldsim.model.world_model import WorldModel

    model, captions = _mapped_model()
    frames, xs = _drive(SPEC, 12)
    ctx = torch.from_numpy(frames[None, 10:12])
    acts, prompt = torch.zeros(1, 2, 2), model.encode_prompts(captions)
    with torch.no_grad():
        for p in model.unet.parameters():
            p.normal_(0.0, 0.2)

    def made(script) -> torch.Tensor:
        gen = torch.Generator().manual_seed(1)
        return model.predict_next(
            ctx, acts, prompt, generator=gen, frame_index=12, odometer_m=float(xs[11]), scripts=[script]
        )

    assert not torch.equal(made(script_of(SPEC)), made(lambda t: ()))
    with pytest.raises(ValueError, match="scripts"):
        model.predict_next(ctx, acts, prompt, frame_index=12, odometer_m=0.0)
    seen = {}

    def spy(scripts, index, camera, cfg, h, w):
        seen["index"], seen["camera"] = index.tolist(), camera.tolist()
        return torch.zeros(1, SCRIPT_MAP_CHANNELS, h, w)

    import worldsim.model.world_model as wm

    real, wm.paint = wm.paint, spy
    try:
        made(script_of(SPEC))
    finally:
        wm.paint = real
    step = float(model.odometer_step(ctx[:, 0], ctx[:, 1]))
    assert seen["index"] == [12] and seen["camera"] == pytest.approx([xs[11] + step], abs=1e-4)
    assert step == pytest.approx(xs[11] - xs[10], abs=0.2)
    real, wm.paint = wm.paint, spy
    try:  # a padded context (an episode's first frame alone) has no step to read
        model.predict_next(
            ctx,
            acts,
            prompt,
            torch.tensor([[False, True]]),
            frame_index=1,
            odometer_m=0.0,
            scripts=[script_of(SPEC)],
        )
    finally:
        wm.paint = real
    assert seen["index"] == [1] and seen["camera"] == [0.0]
    with pytest.raises(ValueError, match="frame_index"):
        model.predict_next(ctx, acts, prompt, odometer_m=0.0, scripts=[script_of(SPEC)])
    with pytest.raises(ValueError, match="odometer"):
        cfg = model.cfg
        WorldModel(type(cfg).from_dict({**cfg.to_dict(), "odometer": False, "odometer_markings": None}))


def test_the_loss_teaches_the_u_net_s_weights_on_the_map_where_an_agent_is_in_view():
    """Trained on a frame where the pedestrian is in view, the gradient reaches the U-Net's weights
    on the map's channels; where the script puts no agent in view the map is empty and it does not."""
    model, captions = _mapped_model()
    model.train()
    with torch.no_grad():  # a fresh U-Net's head is zero: nothing would reach its stem
        model.unet.head.weight.normal_(0.0, 0.2)
    frames, xs = _drive(SPEC, 20)
    from worldsim.metrics.objects import extract_objects, palette_for

    seen = extract_objects(frames, palette_for(SPEC)).visible[:, 2]
    t = int(np.flatnonzero(seen)[0]) + 2  # the pedestrian is in the frame made
    stem = model.unet.stem.weight
    cells = SCRIPT_MAP_CHANNELS * model.cfg.unet.unshuffle**2

    def grad(script) -> torch.Tensor:
        model.zero_grad()
        loss = model.loss(
            torch.from_numpy(frames[None, t - 2 : t]),
            torch.zeros(1, 2, 2),
            torch.from_numpy(frames[None, t]),
            captions,
            torch.ones(1, 2, dtype=torch.bool),
            generator=torch.Generator().manual_seed(0),
            frame_index=torch.tensor([t]),
            odometer_m=torch.tensor([float(xs[t - 1])]),
            scripts=[script],
        )
        loss.backward()
        return stem.grad[:, -cells:].abs().sum()

    assert grad(script_of(SPEC)) > 0
    far = DriveSpec(
        ego_colour="red", ego_lane=0, ego_speed_mps=8.0, friction=0.9, ped_colour="magenta", ped_x_m=400.0
    )
    assert grad(script_of(far)) == 0  # its pedestrian is far down the road: nothing in view
