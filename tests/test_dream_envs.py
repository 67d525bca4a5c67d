"""Dream envs: generated worlds behind the Gymnasium API, single and batched.

A small untrained generator with randomised weights stands in for a trained one: its frames depend
on the sampling noise and on the actions, so batching, seeding and autoreset are really exercised.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from envs.dream import DreamEnv, DreamVectorEnv
from worldsim.model import WorldModel, WorldModelConfig
from worldsim.model.prompt import PromptTokenizer
from worldsim.model.unet import UNetConfig
from worldsim.scenes import PromptError, caption, parse_prompt, sample, script_of
from worldsim.scenes.colours import rgb_uint8
from worldsim.train.checkpoint import CheckpointError

DREAM_IDS = {
    "balls": "worldsim/Dream-Balls-v0",
    "push": "worldsim/Dream-Push-v0",
    "drive": "worldsim/Dream-Drive-v0",
}


def random_generator(family: str) -> WorldModel:
    """A 64x64 generator whose weights are random everywhere (no zero-initialised output layers)."""
    captions = [caption(sample(family, np.random.default_rng(s))) for s in range(8)]
    cfg = WorldModelConfig(
        family=family,
        context=2,
        cond_dim=32,
        vocab=PromptTokenizer.from_captions(captions).vocab,
        unet=UNetConfig(channels=[16, 16], blocks_per_level=1, unshuffle=4, attention=False, groups=4),
    )
    cfg.prompt.dim, cfg.prompt.layers, cfg.prompt.heads, cfg.prompt.out_dim = 16, 1, 2, 16
    cfg.heads.channels, cfg.heads.hidden = 4, 16
    cfg.edm.sigma_data = 0.3
    torch.manual_seed(0)
    model = WorldModel(cfg)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
        model.heads.mlp[-1].bias[1] = -20.0  # no termination: episodes end at the horizon
    return model.eval()


@pytest.fixture(scope="module")
def balls_model() -> WorldModel:
    return random_generator("balls")


def test_single_env_passes_gymnasium_and_sb3_checks(balls_model):
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = gym.make(DREAM_IDS["balls"], model=balls_model, horizon=20)
    check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env.unwrapped, warn=True)
    env.close()


@pytest.mark.parametrize("family", ["push", "drive"])
def test_every_family_passes_gymnasium_and_sb3_checks(family):
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = gym.make(DREAM_IDS[family], model=random_generator(family), horizon=10)
    check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env.unwrapped, warn=True)
    env.close()


def test_spaces_equal_the_truth_env(balls_model):
    dream, truth = gym.make(DREAM_IDS["balls"], model=balls_model), gym.make("worldsim/Balls-v0")
    assert dream.observation_space == truth.observation_space
    assert dream.action_space == truth.action_space
    dream.close(), truth.close()


def test_same_seed_starts_from_the_truth_env_world_and_first_frame(balls_model):
    dream, truth = gym.make(DREAM_IDS["balls"], model=balls_model), gym.make("worldsim/Balls-v0")
    for seed in (0, 7):
        d_obs, d_info = dream.reset(seed=seed)
        t_obs, t_info = truth.reset(seed=seed)
        assert d_info["caption"] == t_info["caption"]
        np.testing.assert_array_equal(d_obs, t_obs)
    dream.close(), truth.close()


def test_same_seed_and_actions_give_identical_frames(balls_model):
    actions = np.random.default_rng(0).uniform(-1, 1, (6, 2)).astype(np.float32)
    runs = []
    for _ in range(2):
        env = gym.make(DREAM_IDS["balls"], model=balls_model)
        env.reset(seed=3)
        runs.append([env.step(a)[0] for a in actions])
        env.close()
    np.testing.assert_array_equal(np.stack(runs[0]), np.stack(runs[1]))
    assert not np.array_equal(runs[0][0], runs[0][-1]), "the random generator should change frames"


def test_make_vec_batches_and_matches_single_envs(balls_model):
    n, steps = 3, 5
    vec = gym.make_vec(DREAM_IDS["balls"], num_envs=n, model=balls_model)
    assert isinstance(vec, DreamVectorEnv) and vec.num_envs == n
    assert vec.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
    actions = np.random.default_rng(1).uniform(-1, 1, (steps, n, 2)).astype(np.float32)
    obs, info = vec.reset(seed=10)
    assert obs.shape == (n, 64, 64, 3) and obs.dtype == np.uint8 and info["caption"].shape == (n,)
    batched = [obs] + [vec.step(a)[0] for a in actions]
    vec.close()
    for i in range(n):
        env = DreamEnv("balls", model=balls_model)
        single = [env.reset(seed=10 + i)[0]] + [env.step(actions[t, i])[0] for t in range(steps)]
        for t in range(steps + 1):
            # Float sums differ with batch size, and a pixel at the generator's 8-level change
            # threshold can flip: equal up to a handful of pixels, never a different world.
            differ = (np.abs(batched[t][i].astype(int) - single[t].astype(int)) > 1).any(-1).mean()
            assert differ < 0.005, f"world {i} step {t}: {differ:.2%} of pixels differ"


def test_truncates_at_horizon_and_autoresets_on_the_next_step(balls_model):
    vec = DreamVectorEnv("balls", num_envs=2, model=balls_model, horizon=3)
    vec.reset(seed=0)
    captions = list(vec.captions)
    for _ in range(3):
        _, rewards, terminated, truncated, info = vec.step(np.zeros((2, 2), np.float32))
    assert (terminated | truncated).all(), "every world ends by the horizon"
    obs, rewards, terminated, truncated, info = vec.step(np.zeros((2, 2), np.float32))
    assert info["restarted"].all() and (rewards == 0).all() and not (terminated | truncated).any()
    assert (info["step"] == 0).all() and list(vec.captions) != captions
    vec.close()


def test_bad_input_is_a_clear_error(balls_model, tmp_path):
    vec = DreamVectorEnv("balls", num_envs=2, model=balls_model)
    with pytest.raises(RuntimeError, match="reset"):
        vec.step(np.zeros((2, 2)))
    vec.reset(seed=0)
    with pytest.raises(ValueError, match=r"world 1: .*non-finite value at index 0"):
        vec.step(np.array([[0.0, 0.0], [np.nan, 0.0]]))
    with pytest.raises(ValueError, match="shape"):
        vec.step(np.zeros((3, 2)))
    obs, *_ = vec.step(np.array([[5.0, -5.0], [0.0, 0.0]]))  # clipped to the box, documented
    assert obs.shape == (2, 64, 64, 3)
    env = DreamEnv("balls", model=balls_model)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(3))
    with pytest.raises(ValueError, match="non-finite"):
        env.step(np.array([np.inf, 0.0]))
    with pytest.raises(PromptError):
        DreamEnv("balls", model=balls_model, prompt="balls: purple agent ball")
    with pytest.raises(ValueError, match="family"):
        DreamEnv("push", model=balls_model)
    with pytest.raises(ValueError, match="probe"):
        DreamEnv("balls", model=balls_model, obs="state")
    with pytest.raises(ValueError, match="sampling precision"):
        DreamEnv("balls", model=balls_model, sampling_precision="float16")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError):
        DreamEnv("balls", checkpoint=str(tmp_path))


def test_generated_context_starts_from_the_prompt(balls_model):
    prompt = "balls: red agent ball, x -0.50 m, z 1.20 m; goal, x 0.60 m"
    env = DreamEnv("balls", model=balls_model, prompt=prompt, context="generated")
    obs, info = env.reset(seed=0)
    assert obs.shape == (64, 64, 3) and info["caption"].startswith("balls: red agent ball")
    obs2, *_ = env.step(np.zeros(2, np.float32))
    assert np.isfinite(obs2).all()


def test_a_generator_with_a_first_frame_net_starts_each_world_from_its_prompt_s_layout(balls_model):
    """A generated start is the frame ``first_frames`` draws over the prompt's layout (an unfitted
    net draws the map painted over the mean frame: every ball of the prompt, in its colour)."""
    from worldsim.model.script_map import ScriptMapConfig
    from worldsim.scenes import scene_camera

    cfg = WorldModelConfig.from_dict({**balls_model.cfg.to_dict(), "first_frame_layout": True})
    cfg.script_map_camera = ScriptMapConfig(**scene_camera("balls", 64, 64))
    model = WorldModel(cfg)
    model.load_state_dict(balls_model.state_dict(), strict=False)
    vec = DreamVectorEnv("balls", num_envs=2, model=model.eval(), horizon=3, context="generated")
    obs, info = vec.reset(seed=0)
    context, _ = model.first_frames(list(info["caption"]))
    assert np.array_equal(obs, context[:, -1].numpy())
    for i, text in enumerate(info["caption"]):
        for ball in parse_prompt(text).balls:
            assert (np.abs(obs[i].astype(int) - rgb_uint8(ball.colour)).max(-1) == 0).sum() > 10
    vec.close()


def test_a_generator_with_a_clock_is_told_each_world_s_frame_index(balls_model, monkeypatch):
    """Frame 0 is the reset frame (made from the prompt with a generated context); each step makes
    the next; a world that restarts counts from 0 again."""
    model = WorldModel(WorldModelConfig.from_dict({**balls_model.cfg.to_dict(), "clock_frames": 10}))
    model.load_state_dict(balls_model.state_dict(), strict=False)
    told = []
    real = model.predict_next

    def spy(*args, frame_index=None, **kwargs):
        told.append(torch.as_tensor(frame_index).tolist())
        return real(*args, frame_index=frame_index, **kwargs)

    monkeypatch.setattr(model, "predict_next", spy)
    vec = DreamVectorEnv("balls", num_envs=2, model=model.eval(), horizon=2, context="generated")
    vec.reset(seed=0)
    for _ in range(3):
        vec.step(np.zeros((2, 2), np.float32))
    assert told == [0, [1, 1], [2, 2], 0]  # both reached the horizon at step 2 and restart at step 3
    vec.close()


def test_a_generator_with_an_odometer_is_told_each_world_s_distance(monkeypatch):
    """Each world starts at distance 0, adds what ``odometer_step`` reads between the frame before
    and the frame made, and starts again from 0 when it restarts."""
    from worldsim.model.odometry import OdometerConfig
    from worldsim.scenes.drive import road_markings

    base = random_generator("drive")
    markings = OdometerConfig(**road_markings(64, 64))
    cfg = {**base.cfg.to_dict(), "odometer": True, "odometer_markings": markings.to_dict()}
    model = WorldModel(WorldModelConfig.from_dict(cfg))
    model.load_state_dict(base.state_dict(), strict=False)
    told, real = [], model.predict_next

    def spy(*args, odometer_m=None, **kwargs):
        told.append(np.round(torch.as_tensor(odometer_m).tolist(), 3).tolist())
        return real(*args, odometer_m=odometer_m, **kwargs)

    steps = iter([torch.tensor([0.5, 1.0]), torch.tensor([0.25, 0.25])])
    monkeypatch.setattr(model, "predict_next", spy)
    monkeypatch.setattr(model, "odometer_step", lambda before, after: next(steps))
    vec = DreamVectorEnv("drive", num_envs=2, model=model.eval(), horizon=2)
    vec.reset(seed=0)
    for _ in range(3):
        vec.step(np.zeros((2, 2), np.float32))
    assert told == [[0.0, 0.0], [0.5, 1.0]]  # the third step restarts both worlds from a real frame
    assert vec._odometer.tolist() == [0.0, 0.0]
    vec.close()


def test_odometer_dynamics_count_each_world_s_first_step_from_its_prompt_s_speed(monkeypatch):
    """With odometer dynamics, a world's first step is counted on from the speed its prompt gives
    (a law that coasts keeps it), not read off the first frame the generator made."""
    from worldsim.model.odometry import OdometerConfig
    from worldsim.scenes import start_step_m
    from worldsim.scenes.drive import road_markings

    base = random_generator("drive")
    cfg = {
        **base.cfg.to_dict(),
        "odometer": True,
        "odometer_markings": OdometerConfig(**road_markings(64, 64)).to_dict(),
        "odometer_trail": 4,
        "odometer_dynamics": True,
        "odometer_dynamics_form": "linear",
    }
    model = WorldModel(WorldModelConfig.from_dict(cfg))
    model.load_state_dict(base.state_dict(), strict=False)  # the law's weights stay zero: it coasts
    monkeypatch.setattr(model, "odometer_step", lambda before, after: torch.full((before.shape[0],), 9.0))
    vec = DreamVectorEnv("drive", num_envs=2, model=model.eval(), horizon=4)
    vec.reset(seed=0)
    for _ in range(2):
        vec.step(np.zeros((2, 2), np.float32))
    prompts = [start_step_m(spec) for spec in vec.scenes]
    assert len(set(prompts)) == 2  # two worlds, two speeds
    np.testing.assert_allclose(vec._odometer[:, -1].numpy(), 2 * np.array(prompts), rtol=1e-5)
    vec.close()


def test_a_generator_with_a_script_map_is_given_each_world_s_script(monkeypatch):
    """Each world's prompt scripts its own agents: the Dream env hands the generator each live
    world's script (the one its spec makes), at the start and at every step."""
    from worldsim.model.odometry import OdometerConfig
    from worldsim.scenes import script_map_camera
    from worldsim.scenes.drive import road_markings

    base = random_generator("drive")
    cfg = {
        **base.cfg.to_dict(),
        "odometer": True,
        "odometer_markings": OdometerConfig(**road_markings(64, 64)).to_dict(),
        "script_map": True,
        "script_map_camera": script_map_camera("drive", 64, 64),
    }
    model = WorldModel(WorldModelConfig.from_dict(cfg)).eval()
    told, real = [], model.predict_next

    def spy(*args, scripts=None, **kwargs):
        told.append([s(3.0) for s in scripts])
        return real(*args, scripts=scripts, **kwargs)

    monkeypatch.setattr(model, "predict_next", spy)
    vec = DreamVectorEnv("drive", num_envs=2, model=model, horizon=4)
    vec.reset(seed=0)
    vec.step(np.zeros((2, 2), np.float32))
    expected = [script_of(spec)(3.0) for spec in vec.scenes]
    assert told == [expected] and any(expected)  # one world at least has an agent to draw
    vec.close()


def test_ppo_runs_in_a_dream_env(balls_model):
    from stable_baselines3 import PPO

    env = gym.make(DREAM_IDS["balls"], model=balls_model, horizon=32)
    agent = PPO("CnnPolicy", env, n_steps=64, batch_size=32, n_epochs=1, seed=0, verbose=0)
    agent.learn(total_timesteps=128)
    obs, _ = env.reset(seed=1)
    action, _ = agent.predict(obs, deterministic=True)
    assert env.action_space.contains(action.astype(np.float32))
    env.close()


def test_state_observations_come_from_the_probe(balls_model, tmp_path):
    from worldsim.model.probe import ProbeConfig, StateProbe
    from worldsim.train.probe import load_probe, save_probe

    probe = StateProbe(ProbeConfig(family="balls", state_size=16, channels=8, hidden=16)).eval()
    truth = gym.make("worldsim/Balls-v0", obs="both")
    for obs_mode in ("state", "both"):
        env = gym.make(DREAM_IDS["balls"], model=balls_model, probe=probe, obs=obs_mode)
        assert env.observation_space == gym.make("worldsim/Balls-v0", obs=obs_mode).observation_space
        check_env(env.unwrapped, skip_render_check=True)
        obs, _ = env.reset(seed=0)
        state = obs if obs_mode == "state" else obs["state"]
        assert state.dtype == np.float32 and state.shape == (16,) and np.isfinite(state).all()
        env.close()
    truth.close()
    save_probe(probe, tmp_path)  # beside a generator checkpoint: <checkpoint>/probe/
    again = load_probe(tmp_path, "balls")
    frames = torch.randint(0, 255, (2, 2, 64, 64, 3), dtype=torch.uint8)
    colours = torch.rand(2, 9)
    torch.testing.assert_close(again(frames, colours), probe(frames, colours))
    with pytest.raises(CheckpointError, match="is for 'balls'"):
        load_probe(tmp_path, "push")
    with pytest.raises(CheckpointError, match="no state probe"):
        load_probe(tmp_path / "elsewhere", "balls")
