"""The generator: shapes, determinism, prompt tokens, learning, checkpoint round trip."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from worldsim.model import WorldModel, WorldModelConfig, to_float
from worldsim.model.edm import EDMConfig, sample, sigma_schedule
from worldsim.model.prompt import NUM, UNK, PromptTokenizer
from worldsim.model.unet import UNetConfig
from worldsim.model.world_model import bfloat16_is_fast
from worldsim.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

CAPTIONS = [
    "balls: red agent ball, radius 0.15 m, x -0.50 m; goal, x 0.60 m",
    "balls: blue agent ball, radius 0.18 m, x 0.20 m; red ball, x -0.3 m; goal, x -0.60 m",
]


def tiny_config(**kw) -> WorldModelConfig:
    cfg = WorldModelConfig(
        width=32,
        height=32,
        context=2,
        cond_dim=32,
        vocab=PromptTokenizer.from_captions(CAPTIONS).vocab,
        unet=UNetConfig(channels=[32, 32], blocks_per_level=1, unshuffle=4, attention=True, groups=4),
        **kw,
    )
    cfg.prompt.dim, cfg.prompt.layers, cfg.prompt.heads, cfg.prompt.out_dim = 16, 1, 2, 16
    cfg.heads.channels, cfg.heads.hidden = 8, 16
    return cfg


def moving_square_batch(b: int = 4, k: int = 2, size: int = 32, seed: int = 0):
    """Frames of a red square on grey moving by (action * 3 px) per step: learnable, action-dependent."""
    rng = np.random.default_rng(seed)
    frames = np.full((b, k + 1, size, size, 3), 128, np.uint8)
    actions = rng.uniform(-1, 1, (b, k, 2)).astype(np.float32)
    for i in range(b):
        x, y = rng.integers(8, size - 16, 2)
        for t in range(k + 1):
            frames[i, t, y : y + 6, x : x + 6] = (230, 25, 25)
            if t < k:
                x, y = x + round(3 * actions[i, t, 0]), y + round(3 * actions[i, t, 1])
    return torch.from_numpy(frames[:, :k]), torch.from_numpy(actions), torch.from_numpy(frames[:, k])


def fit(model: WorldModel, ctx, acts, target, captions, mask, steps: int, **loss_kw) -> WorldModel:
    """``steps`` AdamW steps of ``model.loss`` on one fixed batch (seeded), then eval mode."""
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        loss = model.loss(ctx, acts, target, captions, mask, generator=gen, **loss_kw)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_tokenizer_reads_words_and_numbers():
    tok = PromptTokenizer.from_captions(CAPTIONS, max_tokens=40)
    ids, values = tok.encode(["balls: red agent ball, radius 0.15 m", "balls: purple ball"])
    words = [tok.vocab[i] for i in ids[0] if i != 0]
    assert words[:5] == ["balls", "red", "agent", "ball", "radius"]
    assert ids[0, 5] == NUM and values[0, 5] == pytest.approx(0.15)
    assert UNK in ids[1].tolist()  # "purple" is not in the training captions
    with pytest.raises(ValueError, match="at most"):
        tok.encode([" ".join(["ball"] * 41)])


def test_prediction_shapes_and_dtypes():
    model = WorldModel(tiny_config()).eval()
    ctx, acts, _ = moving_square_batch()
    prompt = model.encode_prompts([CAPTIONS[0]] * 4)
    nxt = model.predict_next(ctx, acts, prompt, steps=2, generator=torch.Generator().manual_seed(0))
    assert nxt.shape == (4, 32, 32, 3) and nxt.dtype == torch.uint8
    video = model.rollout(ctx, acts[:, :1], torch.zeros(4, 5, 2), [CAPTIONS[0]] * 4, steps=1)
    assert video.shape == (4, 5, 32, 32, 3) and video.dtype == torch.uint8


@pytest.mark.parametrize("unshuffle", [1, 2, 4])
def test_the_stem_on_pixels_is_the_stem_on_the_unshuffled_grid(unshuffle):
    """The U-Net's first layer runs on the frame's own pixels as one strided convolution: it must
    compute what the stored 3x3 weights compute on the pixel-unshuffled grid, so checkpoints keep
    their meaning."""
    import torch.nn.functional as F

    from worldsim.model.unet import UNet

    torch.manual_seed(0)
    net = UNet(UNetConfig(in_channels=7, out_channels=3, channels=[16, 32], unshuffle=unshuffle, groups=4))
    x = torch.randn(2, 7, 16, 16)
    on_grid = net.stem(F.pixel_unshuffle(x, unshuffle) if unshuffle > 1 else x)
    torch.testing.assert_close(net.stem_on_pixels(x), on_grid, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("size", [8, 32])
def test_group_norm_gives_nn_group_norm_s_result_in_the_layout_it_was_given(size):
    """The U-Net's GroupNorm normalises low-resolution channels-last activations in the contiguous
    layout for speed: same parameters, same values, and channels-last in, channels-last out."""
    from worldsim.model.unet import GroupNorm

    torch.manual_seed(0)
    norm = GroupNorm(4, 16)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    reference = torch.nn.GroupNorm(4, 16)
    reference.load_state_dict(norm.state_dict())
    x = (3 * torch.randn(2, 16, size, size) + 1).contiguous(memory_format=torch.channels_last)
    out = norm(x)
    torch.testing.assert_close(out, reference(x.contiguous()), atol=1e-5, rtol=1e-5)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(norm(x.contiguous()), out, atol=1e-5, rtol=1e-5)


def test_the_networks_read_the_context_frames_then_their_differences():
    """The context channels (built channels-last, as the networks read them fastest) hold frame k's
    colours at 3k..3k+2 and then the differences of successive frames: the order trained weights
    were fitted to."""
    model = WorldModel(tiny_config()).eval()
    k = model.cfg.context
    context = torch.randn(2, k, 3, 8, 8)
    ctx = model._context_channels(context)
    diffs = context[:, 1:] - context[:, :-1]
    torch.testing.assert_close(ctx, torch.cat([context.flatten(1, 2), diffs.flatten(1, 2)], dim=1))
    assert ctx.is_contiguous(memory_format=torch.channels_last)


def test_the_heads_score_a_transition_alike_at_either_precision():
    model = WorldModel(tiny_config()).eval()
    torch.manual_seed(0)
    for p in model.heads.parameters():
        torch.nn.init.normal_(p, std=0.1)
    ctx, acts, nxt = moving_square_batch()
    prompt = model.encode_prompts([CAPTIONS[1]] * 4)
    frame = ctx[:, -1]
    exact = model.heads(to_float(frame), acts[:, -1], to_float(nxt), prompt)
    for precision, tol in (("float32", 1e-6), ("bfloat16", 0.05)):
        reward, logit = model.reward_termination(frame, acts[:, -1], nxt, prompt, precision=precision)
        assert reward.dtype == logit.dtype == torch.float32
        torch.testing.assert_close(reward, exact[0], atol=tol, rtol=tol)
        torch.testing.assert_close(logit, exact[1], atol=tol, rtol=tol)


def test_sampling_is_deterministic_for_a_seed():
    model = WorldModel(tiny_config(min_change_levels=0)).eval()
    torch.nn.init.normal_(model.unet.head.weight, std=0.05)  # an untrained head outputs zeros
    ctx, acts, _ = moving_square_batch()
    prompt = model.encode_prompts([CAPTIONS[1]] * 4)
    a = model.predict_next(ctx, acts, prompt, steps=3, generator=torch.Generator().manual_seed(3))
    b = model.predict_next(ctx, acts, prompt, steps=3, generator=torch.Generator().manual_seed(3))
    c = model.predict_next(ctx, acts, prompt, steps=3, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_bfloat16_sampling_draws_what_float32_draws():
    model = WorldModel(tiny_config()).eval()
    torch.nn.init.normal_(model.unet.head.weight, std=0.05)  # an untrained head outputs zeros
    ctx, acts, _ = moving_square_batch()
    prompt = model.encode_prompts([CAPTIONS[1]] * 4)
    noise = model.draw_sampling_noise(4, torch.Generator().manual_seed(0))
    dtypes = []
    model.unet.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    a = model.predict_next(ctx, acts, prompt, noise=noise, precision="float32")
    b = model.predict_next(ctx, acts, prompt, noise=noise, precision="bfloat16")
    # the U-Net really ran in bfloat16 (where the CPU has it natively; elsewhere sampling keeps float32)
    assert dtypes == [
        torch.float32,
        torch.bfloat16 if bfloat16_is_fast(torch.device("cpu")) else torch.float32,
    ]
    assert b.dtype == torch.uint8 and b.shape == a.shape
    assert not torch.equal(a, ctx[:, -1])  # the sample changed the frame, so the comparison means something
    # bf16 keeps 8 bits of mantissa: a pixel may differ by a few levels, or flip across the
    # min-change threshold, but the frames agree almost everywhere.
    assert (a.int() - b.int()).abs().amax(-1).le(12).float().mean() > 0.99
    with pytest.raises(ValueError, match="sampling precision"):
        model.predict_next(ctx, acts, prompt, noise=noise, precision="float16")
    with pytest.raises(ValueError, match="sampling precision"):
        WorldModel(tiny_config(sampling_precision="half"))


def test_sigma_schedule_descends_to_zero():
    s = sigma_schedule(3, EDMConfig())
    assert s[0] == pytest.approx(EDMConfig().sigma_max) and s[-1] == 0 and torch.all(s[:-1] > s[1:])
    with pytest.raises(ValueError):
        sigma_schedule(0, EDMConfig())


def test_edm_sampler_recovers_a_point_mass():
    """With the ideal denoiser of a distribution concentrated at c, sampling returns c at any step count."""
    c = torch.full((2, 3, 4, 4), 0.3)
    cfg = EDMConfig(sigma_data=0.5)

    def ideal(x_in, c_noise):  # F such that D(x; sigma) = c exactly
        sigma = (4 * c_noise).exp().view(-1, 1, 1, 1)
        s2 = sigma**2 + cfg.sigma_data**2
        x = x_in * s2.sqrt()
        return (c - cfg.sigma_data**2 / s2 * x) / (sigma * cfg.sigma_data / s2.sqrt())

    for steps in (1, 2, 3):
        out = sample(ideal, c.shape, cfg, steps, generator=torch.Generator().manual_seed(0))
        assert torch.allclose(out, c, atol=1e-4)


def test_ancestral_sampling_commits_where_one_step_draws_the_mean():
    """Data at -1 or +1 (even odds): the ideal denoiser's one step lands on the mean, 0 (a ball
    blended over both places it may be); ancestral steps put fresh noise back and commit to +-1."""
    cfg = EDMConfig(sigma_data=1.0, sigma_min=0.002, sigma_max=5.0)

    def ideal(x_in, c_noise):  # F such that D(x; sigma) = E[x0 | x] = tanh(x / sigma^2)
        sigma = (4 * c_noise).exp().view(-1, 1, 1, 1)
        s2 = sigma**2 + cfg.sigma_data**2
        x = x_in * s2.sqrt()
        return (torch.tanh(x / sigma**2) - cfg.sigma_data**2 / s2 * x) / (sigma * cfg.sigma_data / s2.sqrt())

    shape = (4000, 1, 1, 1)
    one = sample(ideal, shape, cfg, 1, generator=torch.Generator().manual_seed(0))
    # at sigma_max = 5 the noise says little: samples near the mean, none at either place
    assert one.abs().mean() < 0.25 and one.abs().max() < 0.7
    out = sample(ideal, shape, cfg, 8, generator=torch.Generator().manual_seed(0), eta=1.0)
    assert (out.abs() - 1).abs().max() < 1e-3  # every sample at -1 or +1
    assert abs(float((out > 0).float().mean()) - 0.5) < 0.04  # in the data's proportions
    with pytest.raises(ValueError, match="renoise has shape"):
        sample(ideal, shape, cfg, 8, noise=torch.zeros(shape), eta=1.0, renoise=torch.zeros(4000, 3, 1, 1, 1))


def test_ancestral_noise_is_drawn_per_world_and_required():
    """An ancestral generator draws its fresh noise with the rest (a world's stream gives the same
    sample in any batch), and a noise draw without it is refused rather than silently replaced."""
    model = WorldModel(tiny_config(sampling_steps=3, sampling_eta=1.0)).eval()
    ctx = torch.randint(0, 255, (2, model.cfg.context, 32, 32, 3), dtype=torch.uint8)
    acts, prompt = torch.zeros(2, model.cfg.context, 2), model.encode_prompts(["a red ball"] * 2)
    draws = [model.draw_sampling_noise(1, torch.Generator().manual_seed(i)) for i in range(2)]
    assert draws[0]["renoise"].shape == (1, 2, 3, 32, 32)
    both = model.predict_next(
        ctx, acts, prompt, noise={k: torch.cat([d[k] for d in draws]) for k in draws[0]}
    )
    alone = model.predict_next(ctx[1:], acts[1:], prompt[1:], noise=draws[1])
    assert torch.equal(both[1:], alone)
    with pytest.raises(ValueError, match="renoise"):
        model.predict_next(ctx, acts, prompt, noise={k: v for k, v in draws[0].items() if k != "renoise"})
    with pytest.raises(ValueError, match="renoise has shape"):
        model.predict_next(ctx[:1], acts[:1], prompt[:1], noise=draws[0], steps=4)


def test_one_step_denoiser_learns_the_mean_under_l2_and_the_median_under_pseudo_huber():
    """A pixel that is 1 (an object) in 30 % of the data and 0 (background) otherwise: the one-step
    sample (the denoiser at sigma_max) converges to the blend 0.3 under the squared error, and to
    the more likely 0 under pseudo-Huber; the ghost that ``frame_loss=pseudo_huber`` removes."""
    from worldsim.model.edm import denoise, training_loss

    cfg = EDMConfig(sigma_data=0.5, sigma_max_prob=1.0)
    gen = torch.Generator().manual_seed(0)
    found = {}
    for kind in ("l2", "pseudo_huber"):
        out = torch.zeros(1, 1, 1, 1, requires_grad=True)  # a network that outputs one learned value

        def net(x: torch.Tensor, c_noise: torch.Tensor, out: torch.Tensor = out) -> torch.Tensor:
            return out.expand_as(x)

        opt = torch.optim.Adam([out], lr=0.02)
        for _ in range(600):
            clean = (torch.rand(256, 1, 1, 1, generator=gen) < 0.3).float()
            loss = training_loss(net, clean, cfg, generator=gen, kind=kind)
            opt.zero_grad()
            loss.backward()
            opt.step()
        x = torch.randn(4096, 1, 1, 1, generator=gen) * cfg.sigma_max
        sample_at_max = denoise(net, x, torch.full((4096,), cfg.sigma_max), cfg.sigma_data)
        found[kind] = float(sample_at_max.mean().detach())
    assert found["l2"] == pytest.approx(0.3, abs=0.05), found
    assert abs(found["pseudo_huber"]) < 0.08, found
    with pytest.raises(ValueError, match="loss must be one of"):
        training_loss(lambda x, c: x, torch.zeros(1, 1, 1, 1), cfg, kind="l3")


def test_model_learns_a_moving_square():
    """A few hundred steps on 8 windows: the loss at the first sampling step's noise level (where a
    deterministic target leaves no irreducible error) falls far below its start, and a one-step
    sample puts the square nearer where it went than repeating the last frame does (an untrained
    model's sample is more than twice as far off as the frozen frame)."""
    torch.manual_seed(0)
    cfg = tiny_config(motion_weight=10.0, sampling_steps=1, sampling_context_noise=0.0)
    ctx, acts, target = moving_square_batch(b=8, seed=1)
    cfg.edm.sigma_data = float(
        (to_float(target) - to_float(ctx[:, -1])).std()
    )  # as the training loop measures it
    model = WorldModel(cfg)
    captions = [CAPTIONS[0]] * 8
    mask = torch.ones(8, 2, dtype=torch.bool)

    def loss_at_sigma_max() -> float:
        noise = model.draw_noise(8, torch.Generator().manual_seed(9))
        edm = model.cfg.edm
        noise["level"].fill_((math.log(edm.sigma_max) - edm.p_mean) / edm.p_std)  # every sample at sigma_max
        noise["context_use"].zero_()
        with torch.no_grad():
            return model.loss(ctx, acts, target, captions, mask, noise=noise).item()

    before = loss_at_sigma_max()
    fit(model, ctx, acts, target, captions, mask, 300)
    after = loss_at_sigma_max()
    assert after < 0.25 * before, (before, after)
    prompt = model.encode_prompts(captions)
    pred = model.predict_next(ctx, acts, prompt, steps=1, generator=torch.Generator().manual_seed(0))
    err_model = (pred.float() - target.float()).abs().mean()
    err_frozen = (ctx[:, -1].float() - target.float()).abs().mean()
    assert err_model < 0.8 * err_frozen, (float(err_model), float(err_frozen))


def test_checkpoint_round_trip_gives_identical_samples(tmp_path):
    cfg = tiny_config()
    model = WorldModel(cfg).eval()
    path = save_checkpoint(tmp_path / "ckpt", model, cfg.to_dict(), family="balls", frame_size=(32, 32))
    ckpt = load_checkpoint(path, family="balls")
    again = ckpt.load_into(WorldModel(WorldModelConfig.from_dict(ckpt.config))).eval()
    ctx, acts, _ = moving_square_batch()
    outs = []
    for m in (model, again):
        prompt = m.encode_prompts([CAPTIONS[0]] * 4)
        outs.append(m.predict_next(ctx, acts, prompt, generator=torch.Generator().manual_seed(1)))
    assert torch.equal(*outs)
    assert WorldModelConfig.from_dict(ckpt.config) == cfg


def test_text_to_video_starts_from_a_generated_first_frame():
    model = WorldModel(tiny_config()).eval()
    model.empty_frame.fill_(128)
    context, mask = model.first_frames(CAPTIONS, steps=1, generator=torch.Generator().manual_seed(0))
    assert context.shape == (2, 2, 32, 32, 3) and context.dtype == torch.uint8
    assert torch.equal(context[:, 0], context[:, 1])  # the first frame, repeated as padding
    assert mask.tolist() == [[False, True], [False, True]]
    video = model.rollout(
        context, torch.zeros(2, 1, 2), torch.zeros(2, 3, 2), CAPTIONS, steps=1, context_mask=mask
    )
    assert video.shape == (2, 3, 32, 32, 3)


def still_scenes(seed: int, ghost_levels: int = 0):
    """Eight still scenes (context, zero actions, target) and the context with a patch
    ``ghost_levels`` off in every frame, as a half-erased object leaves it."""
    ctx, acts, _ = moving_square_batch(b=8, seed=seed)
    ctx = ctx[:, :1].expand(-1, 2, -1, -1, -1).contiguous()  # nothing moves
    ghosted = ctx.to(torch.int16)
    ghosted[:, :, 4:12, 4:12] += ghost_levels
    return ctx, acts * 0, ctx[:, -1].clone(), ghosted.clamp(0, 255).to(torch.uint8)


def test_undoing_context_noise_teaches_the_model_to_clean_a_ghost():
    """Still scenes, trained with context noise. Learned from the clean last frame (the default),
    the next frame carries a ghost that is in every context frame forward untouched; learned from
    the noisy one (``undo_context_noise``), a good part of it goes, in scenes it was not trained on
    and with the default sampling context noise (400 steps: 40 grey levels left vs 28)."""
    ctx, acts, target, _ = still_scenes(2)
    _, test_acts, test_target, ghosted = still_scenes(5, ghost_levels=40)
    captions, mask = [CAPTIONS[0]] * 8, torch.ones(8, 2, dtype=torch.bool)
    left = {}
    for undo in (False, True):
        torch.manual_seed(0)
        cfg = tiny_config(sampling_steps=1, context_noise_prob=1.0)
        cfg.edm.sigma_data, cfg.edm.sigma_max_prob = 0.1, 0.5
        model = fit(WorldModel(cfg), ctx, acts, target, captions, mask, 400, undo_context_noise=undo)
        prompt = model.encode_prompts(captions)
        pred = model.predict_next(ghosted, test_acts, prompt, generator=torch.Generator().manual_seed(0))
        patch = (slice(None), slice(4, 12), slice(4, 12))
        left[undo] = float((pred[patch].float() - test_target[patch].float()).abs().mean())
    assert left[False] > 38, left  # the ghost stays
    assert left[True] < 33, left  # the ghost fades


def test_a_clock_times_what_the_frames_cannot_show():
    """Identical still contexts; a square appears in the next frame from frame 5 on. Only a model told
    the frame's index can know when: without it the best one-step answer is the mean, a faint square
    that the change threshold drops, right for half the frames at most."""
    ctx = torch.full((8, 2, 32, 32, 3), 128, dtype=torch.uint8)
    acts = torch.zeros(8, 2, 2)
    index = torch.arange(1, 9)  # 1..8
    target = ctx[:, -1].clone()
    target[index >= 5, 10:18, 10:18] = torch.tensor([230, 25, 25], dtype=torch.uint8)
    captions, mask = [CAPTIONS[0]] * 8, torch.ones(8, 2, dtype=torch.bool)
    errors = {}
    for clock in (0, 10):
        torch.manual_seed(0)
        cfg = tiny_config(sampling_steps=1, sampling_context_noise=0.0, clock_frames=clock)
        cfg.edm.sigma_data = float((to_float(target) - to_float(ctx[:, -1])).std())
        model = fit(WorldModel(cfg), ctx, acts, target, captions, mask, 300, frame_index=index)
        prompt = model.encode_prompts(captions)
        pred = model.predict_next(
            ctx, acts, prompt, generator=torch.Generator().manual_seed(0), frame_index=index
        )
        errors[clock] = float((pred.float() - target.float()).abs().mean())
    assert errors[10] < 0.3 * errors[0], errors


def test_a_clock_needs_the_frame_index_and_fine_tuning_may_add_one(tmp_path):
    from worldsim.train.loop import load_init

    ctx, acts, _ = moving_square_batch()
    clocked = WorldModel(tiny_config(clock_frames=50)).eval()
    for bad in (None, torch.tensor([3]), torch.tensor([1, 2, 3, -1])):  # missing, one for four, negative
        with pytest.raises(ValueError, match="frame_index"):
            clocked.predict_next(ctx, acts, clocked.encode_prompts([CAPTIONS[0]] * 4), frame_index=bad)
    plain = WorldModel(tiny_config()).eval()
    path = save_checkpoint(tmp_path / "ckpt", plain, plain.cfg.to_dict(), family="balls", frame_size=(32, 32))
    clocked = WorldModel(tiny_config(clock_frames=50)).eval()
    load_init(load_checkpoint(path), clocked)
    prompt = plain.encode_prompts([CAPTIONS[0]] * 4)
    want = plain.predict_next(ctx, acts, prompt, generator=torch.Generator().manual_seed(1))
    for index in (0, 7, 400):  # the clock starts at zero: the checkpoint's function at any time
        got = clocked.predict_next(
            ctx, acts, prompt, generator=torch.Generator().manual_seed(1), frame_index=index
        )
        assert torch.equal(got, want)
    narrower = tiny_config(clock_frames=50)
    narrower.unet.channels = [16, 16]  # another architecture is still refused
    with pytest.raises(CheckpointError, match="do not fit"):
        load_init(load_checkpoint(path), WorldModel(narrower))


def _square_scene(shifts: list[int], size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Still contexts of a red square on the backdrop; in row i's next frame it has moved
    ``shifts[i]`` px right. ``(context uint8[B,2,H,W,3], next uint8[B,H,W,3])``."""
    from worldsim.scenes.colours import rgb_uint8

    ctx = np.zeros((len(shifts), 2, size, size, 3), np.uint8)
    ctx[:] = rgb_uint8("backdrop")
    nxt = ctx[:, -1].copy()
    ctx[:, :, 12:18, 6:12] = rgb_uint8("red")
    for i, s in enumerate(shifts):
        nxt[i, 12:18, 6 + s : 12 + s] = rgb_uint8("red")
    return torch.from_numpy(ctx), torch.from_numpy(nxt)


def _square_palette():
    from worldsim.metrics.objects import Palette

    return Palette.build([("square", 1, ["red"])], ["backdrop"])


def test_regions_join_4_connected_pixels_of_one_colour_however_they_wind():
    """A spiral of one colour (a label must turn many corners), two squares of one colour apart, and
    the background around them: each its own region, labelled by its largest flat index."""
    from worldsim.model.warp import regions

    h = w = 12
    frame = torch.zeros(1, 3, h, w)
    spiral = [(1, c) for c in range(1, 11)] + [(r, 10) for r in range(1, 11)]
    spiral += [(10, c) for c in range(3, 11)] + [(r, 3) for r in range(4, 11)]
    spiral += [(4, c) for c in range(3, 8)] + [(r, 7) for r in range(4, 8)]
    for r, c in spiral:
        frame[0, 0, r, c] = 1.0
    frame[0, 1, 6, 5] = frame[0, 1, 8, 5] = 1.0  # two green pixels, not 4-neighbours
    labels = regions(frame)[0]
    flat = torch.arange(h * w).view(h, w)
    red = frame[0, 0] > 0
    assert (labels[red] == flat[red].max()).all()
    assert labels[6, 5] == 6 * w + 5 and labels[8, 5] == 8 * w + 5
    background = (frame[0].abs().sum(0) == 0) & ~red
    assert (labels[background] == flat[background].max()).all()
    assert len(labels.unique()) == 4


def test_a_warp_moves_flat_colours_whole_and_fills_what_they_uncover():
    from worldsim.model.warp import HOLE, region_mean_flow, splat_forward, warp

    ctx, nxt = _square_scene([3])
    last = to_float(ctx[:, -1])
    flow = torch.zeros(1, 2, 32, 32)
    flow[:, 0, 12:18, 6:12] = 3.0  # 3 px right, where the square is now
    flow[:, 0, 14, 8] = 3.6  # a predicted field is not quite uniform: one mean per region
    flow[:, 0, 0, 0] = 0.4  # a slight drift of the backdrop rounds to no move
    moved, holes, landed = splat_forward(last, region_mean_flow(flow, last))
    assert torch.all(moved[:, :, 12:18, 6:9] == HOLE) and holes.sum() == 18 and landed.sum() == 36
    assert torch.equal(warp(last, flow), to_float(nxt))  # the square, whole, and the backdrop behind it
    spill = torch.zeros(1, 2, 32, 32)
    spill[:, 0, 12:18, 4:12] = 3.0  # the field spills onto the backdrop, which stays as one region
    mean = region_mean_flow(spill, last)
    assert torch.all(mean[0, 0, 12:18, 6:12] == 3.0) and mean[0, 0, 14, 4] < 0.5
    orange = torch.tensor([255.0, 140.0, 0.0]) / 127.5 - 1.0
    stripe = last.clone()
    stripe[0, :, :, 8] = orange[:, None]
    stripe[:, :, 12:18, 6:12] = last[:, :, 12:18, 6:12]  # the square in front of a vertical stripe
    uncovered = warp(stripe, flow)[0, :, 12:18, 8]  # the square moved off the stripe
    assert torch.equal(uncovered, orange[:, None].expand(3, 6))  # continued from above
    with pytest.raises(ValueError, match="flow"):
        warp(last, flow[:, :1])


def test_scenery_of_a_still_colour_stays_where_it_is_however_the_field_smears_a_move_onto_it():
    """A square falls 4 px in front of a vertical stripe of 2 px, cutting it in two; the field spills
    its move onto the stripe. By the region means the short piece below the square falls with it (as
    Balls' goal pole did below a falling ball, README); with the stripe's colour still, both pieces
    stay where they were, and the square still falls whole."""
    from worldsim.metrics.objects import still_scenery_colours
    from worldsim.model.warp import region_mean_flow, regions, warp
    from worldsim.scenes.colours import rgb_uint8

    ctx, _ = _square_scene([0])
    last = to_float(ctx[:, -1])
    orange = torch.tensor(rgb_uint8("goal"), dtype=torch.float32) / 127.5 - 1.0
    red = last[0, :, 14, 8].clone()
    last[0, :, 2:30, 10:12] = orange[:, None, None]
    last[0, :, 12:18, 6:12] = red[:, None, None]  # the square in front of the stripe
    assert len(regions(last)[0, 2:30, 10].unique()) == 3  # the stripe above, the square, the stripe below
    assert torch.equal(red, torch.tensor(rgb_uint8("red"), dtype=torch.float32) / 127.5 - 1.0)
    flow = torch.zeros(1, 2, 32, 32)
    flow[:, 1, 10:22, 4:14] = 4.0  # the square falls 4 px; the field spills over the stripe around it
    piece_below = (slice(18, 30), slice(10, 12))
    assert torch.all(region_mean_flow(flow, last)[0, 1][piece_below].round() >= 1.0)  # by the mean: moved
    still = torch.tensor(still_scenery_colours("balls"), dtype=torch.float32) / 127.5 - 1.0
    assert any(torch.equal(c, orange) for c in still)  # the goal is Balls' scenery
    mean = region_mean_flow(flow, last, still_colours=still)
    assert torch.all(mean[0, 1, 12:18, 6:12] == 4.0)
    assert torch.all(mean[0][:, 2:12, 10:12] == 0.0) and torch.all(
        mean[0][(slice(None), *piece_below)] == 0.0
    )
    out = warp(last, flow, still_colours=still)
    assert torch.equal(out[0][:, 2:12, 10:12], last[0][:, 2:12, 10:12])  # the stripe above, where it was
    assert torch.equal(out[0][:, 22:30, 10:12], last[0][:, 22:30, 10:12])  # and below the square
    assert torch.equal(out[0, :, 16:22, 6:12], red[:, None, None].expand(3, 6, 6))  # the square fell whole
    assert torch.equal(warp(last, flow, still_colours=still[:0]), warp(last, flow))  # none: all may move
    with pytest.raises(ValueError, match="follows"):
        still_scenery_colours("drive")


def test_what_a_ball_uncovers_is_the_scenery_the_context_saw_behind_it():
    """A square moves in front of a short orange mark: in the oldest context frame the mark shows,
    in the last the square covers all of it. Moved on, the square uncovers the mark: filled from its
    neighbours alone (the backdrop all round) the mark is gone; filled from the scenery the context
    saw behind it, the mark is there again. Where the context never saw scenery, the neighbours
    fill as before."""
    from worldsim.model.warp import HOLE, scenery_behind, warp
    from worldsim.scenes.colours import rgb_uint8

    ctx, _ = _square_scene([0])
    covered = to_float(ctx[:, -1])
    red = covered[0, :, 14, 8].clone()
    backdrop = covered[0, :, 0, 0].clone()
    orange = torch.tensor(rgb_uint8("goal"), dtype=torch.float32) / 127.5 - 1.0
    seen = covered.clone()
    seen[0, :, 12:18, 6:12] = backdrop[:, None, None]  # the oldest frame: the square not yet there,
    seen[0, :, 13:17, 8:10] = orange[:, None, None]  # and the mark it covers later
    context = torch.stack([seen, covered], 1)
    still = torch.stack([backdrop, orange])
    behind = scenery_behind(context, still)
    assert torch.equal(behind[0], seen[0])  # every pixel shows scenery in the oldest frame
    assert torch.all(scenery_behind(covered[:, None], still)[0, :, 12:18, 6:12] == HOLE)  # never seen
    flow = torch.zeros(1, 2, 32, 32)
    flow[:, 0, 12:18, 6:12] = 8.0  # the square moves 8 px right, off the mark
    gone = warp(covered, flow, still_colours=still)
    assert torch.equal(gone[0, :, 12:18, 6:12], backdrop[:, None, None].expand(3, 6, 6))
    back = warp(covered, flow, still_colours=still, behind=behind)
    assert torch.equal(back[0, :, 12:18, 6:12], seen[0, :, 12:18, 6:12])  # the mark, and the backdrop
    assert torch.equal(back[0, :, 12:18, 14:20], red[:, None, None].expand(3, 6, 6))  # the square moved
    unseen = scenery_behind(covered[:, None], still)
    assert torch.equal(warp(covered, flow, still_colours=still, behind=unseen), gone)
    two = torch.cat([context, context])  # the same frames in two worlds, the first one's oldest padding
    both = scenery_behind(two, still, torch.tensor([[False, True], [True, True]]))
    assert torch.equal(both[0], unseen[0]) and torch.equal(both[1], behind[0])


def test_a_generator_checks_its_still_colours():
    with pytest.raises(ValueError, match="flow_still_colours"):
        WorldModel(WorldModelConfig(flow_still_colours=[[300, 0, 0]]))
    with pytest.raises(ValueError, match="needs flow_channels"):
        WorldModel(WorldModelConfig(flow_still_colours=[[217, 217, 217]]))


def test_a_generator_with_still_colours_warps_with_them_and_the_scenery_its_context_saw(monkeypatch):
    """Training and sampling both hand the warp the config's colours (in [-1, 1]) and the scenery
    behind each pixel in the clean context; without colours, neither."""
    import worldsim.model.world_model as wm

    seen, real_warp = [], wm.warp

    def spy(frames, flow_px, dither=None, still_colours=None, behind=None):
        seen.append((still_colours, behind))
        return real_warp(frames, flow_px, dither, still_colours, behind)

    monkeypatch.setattr(wm, "warp", spy)
    cfg = tiny_config(flow_channels=[16, 16], flow_still_colours=[[217, 217, 217]])
    model = WorldModel(cfg)
    ctx, nxt = _square_scene([2])
    backdrop = torch.tensor([217.0, 217.0, 217.0]) / 127.5 - 1.0
    flow = torch.zeros(1, 2, 32, 32)
    acts, captions = torch.zeros(1, 2, 2), CAPTIONS[:1]
    mask = torch.ones(1, 2, dtype=torch.bool)
    model.loss(ctx, acts, nxt, captions, mask, flow_target=flow, flow_weight=flow[:, :1] + 1)
    model.predict_next(ctx, acts, model.encode_prompts(captions))
    assert len(seen) == 2
    for colours, behind in seen:
        assert torch.equal(colours, backdrop[None])
        assert torch.equal(behind[0, :, 0, 0], backdrop) and torch.all(
            behind[0, :, 14, 8] == 0.0
        )  # red: HOLE
    seen.clear()
    padded = torch.tensor([[False, True]])  # both hand the warp the mask: a padded frame shows nothing
    ctx[:, 0] = 0  # a black padding frame: not scenery, and skipped
    ctx[:, 0, 14, 8] = torch.tensor([217, 217, 217], dtype=torch.uint8)  # even where it shows backdrop
    model.loss(ctx, acts, nxt, captions, padded, flow_target=flow, flow_weight=flow[:, :1] + 1)
    model.predict_next(ctx, acts, model.encode_prompts(captions), padded)
    assert len(seen) == 2 and all(torch.all(behind[0, :, 14, 8] == 0.0) for _, behind in seen)
    seen.clear()
    model.cfg.flow_still_colours = []  # a sampling setting: read at each call
    model.predict_next(ctx, acts, model.encode_prompts(captions))
    assert seen == [(None, None)]


def test_a_dithered_warp_moves_a_region_whole_and_by_its_move_on_average():
    from worldsim.model.warp import warp

    ctx, _ = _square_scene([0])
    last = to_float(ctx[:, -1])
    flow = torch.zeros(1, 2, 32, 32)
    flow[:, 0, 12:18, 6:12] = 0.3  # a third of a pixel: rounded, it would never move
    assert torch.equal(warp(last, flow), last)
    red = last[0, :, 14, 8]
    columns = []
    for seed in range(200):
        dither = torch.rand(1, 2, 32, 32, generator=torch.Generator().manual_seed(seed))
        moved = warp(last, flow, dither)
        square = (moved[0] - red[:, None, None]).abs().amax(0) < 1e-6
        assert square.sum() == 36  # whole: one draw per region
        columns.append(square.nonzero()[:, 1].float().mean() - 8.5)
    assert abs(float(torch.stack(columns).mean()) - 0.3) < 0.1


def test_a_flow_learns_the_mean_move_under_l2_and_the_median_under_pseudo_huber():
    """A ball that moves 3 px down, or bounces 3 px up in 30 % of the data: a field fitted under the
    squared error learns the shortened mean move (1.2 px down), under pseudo-Huber the more likely
    move at full length, which is what ``train.flow_loss=pseudo_huber`` asks of a flow."""
    from worldsim.model.world_model import flow_error

    gen = torch.Generator().manual_seed(0)
    found = {}
    for kind in ("l2", "pseudo_huber"):
        field = torch.zeros(1, 2, 1, 1, requires_grad=True)  # one learned move
        opt = torch.optim.Adam([field], lr=0.05)
        for _ in range(600):
            bounce = torch.rand(256, 1, 1, 1, generator=gen) < 0.3
            target = torch.cat([torch.zeros(256, 1, 1, 1), torch.where(bounce, -3.0, 3.0)], 1)
            loss = flow_error(field.expand_as(target), target, kind).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        found[kind] = field.detach().flatten().tolist()
    assert found["l2"][1] == pytest.approx(1.2, abs=0.15) and abs(found["l2"][0]) < 0.05, found
    assert found["pseudo_huber"][1] == pytest.approx(3.0, abs=0.15), found
    assert flow_error(torch.zeros(1, 2, 1, 1), torch.zeros(1, 2, 1, 1), "pseudo_huber").item() == 0.0
    with pytest.raises(ValueError, match="flow's error must be one of"):
        flow_error(torch.zeros(1, 2, 1, 1), torch.zeros(1, 2, 1, 1), "l1")


def test_object_flow_is_each_object_s_centroid_motion_where_it_is_now():
    from worldsim.model.warp import warp
    from worldsim.train.flow import SCENERY_WEIGHT, object_flow

    ctx, nxt = _square_scene([4, 0])
    pal = _square_palette()
    flow, weight = object_flow(ctx[:, -1].numpy(), nxt.numpy(), [pal, None])
    region = np.zeros((32, 32), bool)
    region[12:18, 6:12] = True
    np.testing.assert_allclose(flow[0, 0][region], 4.0)
    assert np.all(flow[0, 0][~region] == 0) and np.all(flow[:, 1] == 0) and np.all(flow[1] == 0)
    assert np.all(weight[0, 0][region] == 1) and np.all(weight[0, 0][~region] == SCENERY_WEIGHT)
    assert np.all(weight[1] == SCENERY_WEIGHT)  # a row without a palette: nothing moves
    moved = warp(to_float(ctx[:1, -1]), torch.from_numpy(flow[:1]))
    assert torch.equal(moved[0], to_float(nxt[0]))  # the true warp makes the next frame


def test_object_flow_from_another_frame_paints_the_true_move_where_the_made_frame_has_the_object():
    """``moved_from``: MuJoCo's square moves 4 px (from u=6 to u=10); the generator's own last frame
    has it 2 px behind (u=4). The field asks for MuJoCo's 4 px over the made square, not the 6 px
    jump to MuJoCo's position; an object missing from any of the three frames is given no move."""
    from worldsim.train.flow import SCENERY_WEIGHT, object_flow

    truth_last, nxt = _square_scene([4, 4, 4])
    truth_last = truth_last[:, -1].numpy().copy()
    made = truth_last.copy()
    made[:] = made[0, 0, 0]  # the backdrop
    made[[0, 2], 12:18, 4:10] = truth_last[0, 14, 8]  # the square 2 px behind
    truth_last[2] = truth_last[2, 0, 0]  # row 2: MuJoCo's last frame without the square
    pals = [_square_palette()] * 3
    jump, _ = object_flow(made, nxt.numpy(), pals)
    flow, weight = object_flow(made, nxt.numpy(), pals, truth_last)
    region = np.zeros((32, 32), bool)
    region[12:18, 4:10] = True
    np.testing.assert_allclose(jump[0, 0][region], 6.0)
    np.testing.assert_allclose(flow[0, 0][region], 4.0)
    assert np.all(flow[0, 0][~region] == 0) and np.all(flow[0, 1] == 0)
    assert np.all(weight[0, 0][region] == 1)
    for row in (1, 2):  # row 1's made frame lost the square, row 2's MuJoCo frame has none
        assert np.all(flow[row] == 0) and np.all(weight[row] == SCENERY_WEIGHT)
    with pytest.raises(ValueError, match="object_flow takes"):
        object_flow(made, nxt.numpy(), pals, truth_last[:1])


def test_rows_left_out_of_the_frame_loss_teach_nothing_of_the_frame():
    """``frame_rows``: the frame loss of two rows with the second left out, scaled by the rows over the
    rows kept, is the loss of the first alone (the same noise); the left-out row's target does not
    move it."""
    ctx, acts, target = moving_square_batch()
    captions, mask = [CAPTIONS[0]] * 2, torch.ones(2, 2, dtype=torch.bool)
    ctx, acts, target = ctx[:2], acts[:2], target[:2]
    model = WorldModel(tiny_config())
    noise = model.draw_noise(2, torch.Generator().manual_seed(0))
    first = {k: v[:1] for k, v in noise.items()}
    keep = torch.tensor([True, False])
    with torch.no_grad():
        alone = model.loss(ctx[:1], acts[:1], target[:1], captions[:1], mask[:1], noise=first).item()
        kw = {"noise": noise, "frame_rows": keep, "frame_scale": 2.0}  # 2 rows, 1 kept
        both = model.loss(ctx, acts, target, captions, mask, **kw).item()
        other = target.clone()
        other[1] = 255 - other[1]
        changed = model.loss(ctx, acts, other, captions, mask, **kw).item()
        every = model.loss(ctx, acts, target, captions, mask, noise=noise).item()
    assert both == pytest.approx(alone, rel=1e-5) and changed == both
    assert every != pytest.approx(both, rel=1e-3)


def test_a_rigid_context_steps_the_first_outline_by_whole_pixels_along_the_true_path():
    """A disc drifting 0.6 px a step changes its outline in MuJoCo-like frames; remade as a flow makes
    frames, it keeps its first outline, moves by whole pixels, and stays within rounding of its path."""
    from worldsim.metrics.objects import Palette
    from worldsim.scenes.colours import rgb_uint8
    from worldsim.train.flow import _centroids, rigid_context

    size, k = 32, 6
    vv, uu = np.mgrid[0:size, 0:size]
    ctx = np.zeros((2, k, size, size, 3), np.uint8)
    ctx[:] = rgb_uint8("backdrop")
    true_u = 8.3 + 0.6 * np.arange(k)
    for t in range(k):
        disc = (uu - true_u[t]) ** 2 + (vv - 15.5) ** 2 <= 2.6**2
        ctx[:, t, disc] = rgb_uint8("red")
    pal = Palette.build([("disc", 1, ["red"])], ["backdrop"])
    made = rigid_context(ctx, [pal, None])
    assert np.array_equal(made[1], ctx[1]) and np.array_equal(made[0, 0], ctx[0, 0])  # no palette: as is
    red = np.all(made[0] == rgb_uint8("red"), -1)  # [K, H, W]
    truth_red = np.all(ctx[0] == rgb_uint8("red"), -1)
    assert len({int(m.sum()) for m in truth_red}) > 1  # the true outline changes from step to step
    for t in range(1, k):  # the first outline, moved by a whole number of pixels
        shift = int(round(_centroids(red[t][None])[0][0, 0] - _centroids(red[0][None])[0][0, 0]))
        assert np.array_equal(red[t], np.roll(red[0], shift, axis=1))
    made_u = _centroids(red[:, None])[0][:, 0, 0]
    assert np.all(np.abs(made_u - true_u) < 0.75) and made_u[-1] > made_u[0] + 2  # it keeps up
    with pytest.raises(ValueError, match="rigid_context takes"):
        rigid_context(ctx[0], [pal])


def test_a_flow_moves_an_unsure_square_whole():
    """The square moves 2 or 8 px, and nothing in the context says which. A model with a flow moves
    it whole, still red and about its size, to a place between the two (the flow regresses the mean
    motion; the change is learned on top of the true warp, so it does not blend the square back)."""
    from worldsim.metrics.objects import extract_objects
    from worldsim.train.flow import object_flow

    ctx, nxt = _square_scene([2, 8] * 4)
    acts, captions = torch.zeros(8, 2, 2), [CAPTIONS[0]] * 8
    mask = torch.ones(8, 2, dtype=torch.bool)
    pal = _square_palette()
    flow, weight = (torch.from_numpy(a) for a in object_flow(ctx[:, -1].numpy(), nxt.numpy(), [pal] * 8))
    torch.manual_seed(0)
    cfg = tiny_config(sampling_steps=1, sampling_context_noise=0.0, flow_channels=[16, 16])
    cfg.edm.sigma_data = float((to_float(nxt) - to_float(ctx[:, -1])).std())
    model = fit(WorldModel(cfg), ctx, acts, nxt, captions, mask, 200, flow_target=flow, flow_weight=weight)
    pred = model.predict_next(
        ctx, acts, model.encode_prompts(captions), generator=torch.Generator().manual_seed(0)
    )
    found = extract_objects(pred.numpy(), pal)
    assert np.all(found.count_px[:, 0] >= 0.75 * 36) and np.all(found.count_px[:, 0] <= 1.5 * 36), (
        found.count_px
    )
    moved = found.centroid_px[:, 0, 0] - 9.0  # the square's centre was at u = 9
    assert np.all((moved > 2.5) & (moved < 7.5)), moved


def test_the_change_can_be_learned_on_the_predicted_warp():
    """With ``predicted_warp_share=1`` the change is learned on top of the warp by the field the flow
    predicts (zero in a fresh model: no move), not the true one; the flow still learns the true field."""
    from worldsim.model.world_model import FLOW_LOSS_WEIGHT
    from worldsim.train.flow import object_flow

    ctx, nxt = _square_scene([4, 4])
    fields = object_flow(ctx[:, -1].numpy(), nxt.numpy(), [_square_palette()] * 2)
    flow, weight = (torch.from_numpy(a) for a in fields)
    captions, acts, mask = [CAPTIONS[0]] * 2, torch.zeros(2, 2, 2), torch.ones(2, 2, dtype=torch.bool)
    torch.manual_seed(0)
    model = WorldModel(tiny_config(flow_channels=[16, 16]))
    noise = model.draw_noise(2, torch.Generator().manual_seed(0))

    def loss(target, share):
        kw = {"flow_target": target, "flow_weight": weight, "predicted_warp_share": share}
        with torch.no_grad():
            return model.loss(ctx, acts, nxt, captions, mask, noise=noise, **kw).item()

    on_predicted = loss(flow, 1.0)
    flow_error = float((weight * flow.square().sum(1, keepdim=True)).sum() / weight.sum())
    unmoved = loss(torch.zeros_like(flow), 0.0)  # the true field zero: the same base, no flow error
    assert on_predicted == pytest.approx(unmoved + FLOW_LOSS_WEIGHT * flow_error, rel=1e-5)
    assert on_predicted != pytest.approx(loss(flow, 0.0), rel=1e-3)  # the true warp is another base
    assert loss(flow, 0.0) == loss(flow, 1e-9)  # no row drawn below a vanishing share


def test_a_flow_needs_its_target_and_fine_tuning_may_add_one(tmp_path):
    from worldsim.train.loop import load_init

    ctx, acts, target = moving_square_batch()
    captions, mask = [CAPTIONS[0]] * 4, torch.ones(4, 2, dtype=torch.bool)
    flowing = WorldModel(tiny_config(flow_channels=[16, 16]))
    with pytest.raises(ValueError, match="flow_target"):
        flowing.loss(ctx, acts, target, captions, mask)
    plain = WorldModel(tiny_config()).eval()
    path = save_checkpoint(tmp_path / "ckpt", plain, plain.cfg.to_dict(), family="balls", frame_size=(32, 32))
    load_init(load_checkpoint(path), flowing.eval())
    prompt = plain.encode_prompts(captions)
    want = plain.predict_next(ctx, acts, prompt, generator=torch.Generator().manual_seed(1))
    got = flowing.predict_next(ctx, acts, prompt, generator=torch.Generator().manual_seed(1))
    assert torch.equal(got, want)  # no motion yet, and the warped frame's weights are zero
    with pytest.raises(ValueError, match="target='delta'"):
        WorldModel(tiny_config(flow_channels=[16, 16], target="frame"))


def _drifting_squares(moves_px: list[tuple[int, int]], size: int = 32) -> torch.Tensor:
    """A context ``uint8[1, K, H, W, 3]`` of a red and a blue 4x4 square on the backdrop: the red one
    steps by ``moves_px[t]`` (u, v) between frames t and t + 1, the blue one stands still."""
    from worldsim.scenes.colours import rgb_uint8

    k = len(moves_px) + 1
    frames = np.zeros((1, k, size, size, 3), np.uint8)
    frames[:] = rgb_uint8("backdrop")
    u, v = 4, 6
    for t in range(k):
        frames[0, t, v : v + 4, u : u + 4] = rgb_uint8("red")
        frames[0, t, 24:28, 24:28] = rgb_uint8("blue")
        if t < len(moves_px):
            u, v = u + moves_px[t][0], v + moves_px[t][1]
    return torch.from_numpy(frames)


def test_colour_moves_are_each_flat_colours_centroid_moves_painted_where_it_is_now():
    from worldsim.model.motion import colour_moves
    from worldsim.scenes.colours import rgb_uint8

    ctx = _drifting_squares([(2, -1), (3, 0), (1, 2)])
    moves = colour_moves(ctx)  # [1, 6, H, W]: (u, v) of pairs 0-1, 1-2, 2-3
    assert moves.shape == (1, 6, 32, 32)
    red = (ctx[0, -1] == torch.tensor(rgb_uint8("red"))).all(-1)
    assert red.sum() == 16
    for pair, (du, dv) in enumerate([(2, -1), (3, 0), (1, 2)]):
        assert torch.all(moves[0, 2 * pair][red] == du) and torch.all(moves[0, 2 * pair + 1][red] == dv)
    assert not moves[0][:, ~red].any()  # the blue square stands still, the backdrop is scenery
    gone = ctx.clone()
    gone[0, 0] = ctx[0, 0, :1, :1]  # the first frame all backdrop: no red there to have moved from
    assert not colour_moves(gone)[0, :2].any() and colour_moves(gone)[0, 2:].equal(moves[0, 2:])
    padded = torch.tensor([[False, True, True, True]])  # the first frame is padding: its pair has no move
    assert not colour_moves(ctx, padded)[0, :2].any() and colour_moves(ctx, padded)[0, 2:].equal(moves[0, 2:])
    other = _drifting_squares([(0, 1), (0, 2), (-1, 0)])  # worlds of a batch are measured apart
    both = colour_moves(torch.cat([other, ctx]))
    assert both[1].equal(moves[0]) and both[0].equal(colour_moves(other)[0]) and both[0][1::2].any()
    strided = torch.cat([other, ctx]).permute(0, 1, 3, 2, 4).contiguous().permute(0, 1, 3, 2, 4)
    assert colour_moves(strided).equal(both)  # a context that is a view of other memory
    with pytest.raises(ValueError, match="colour_moves takes"):
        colour_moves(ctx[0])
    with pytest.raises(ValueError, match="colour_moves takes"):
        colour_moves(to_float(ctx))


def test_a_flow_given_the_moves_carries_a_coasting_square_on_and_starts_as_it_was(tmp_path):
    """With ``flow_motion`` the flow reads the colours' moves; fine-tuned from a flow without them it
    starts as the same function (zero weights on the moves, zero carry), and with the carry at one it
    moves a square on by the move it just made, whole, where the flow alone would not move it."""
    from worldsim.metrics.objects import Palette, extract_objects
    from worldsim.model.world_model import FLOW_CARRY_GAIN
    from worldsim.train.loop import load_init

    ctx = _drifting_squares([(3, 0)])  # K = 2: the red square moved 3 px right
    acts, captions = torch.zeros(1, 2, 2), [CAPTIONS[0]]
    torch.manual_seed(0)
    cfg = tiny_config(sampling_context_noise=0.0, flow_channels=[16, 16])
    plain = WorldModel(cfg).eval()
    with torch.no_grad():  # a flow that moves things (a fresh one's head is zero: no move at all)
        plain.flow_net.head.weight.normal_(0.0, 0.5)
    path = save_checkpoint(tmp_path / "ckpt", plain, plain.cfg.to_dict(), family="balls", frame_size=(32, 32))
    moving = WorldModel(tiny_config(sampling_context_noise=0.0, flow_channels=[16, 16], flow_motion=True))
    load_init(load_checkpoint(path), moving.eval())
    prompt = plain.encode_prompts(captions)
    want = plain.predict_next(ctx, acts, prompt, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(want, ctx[:, -1])  # the flow moved something
    assert torch.equal(
        moving.predict_next(ctx, acts, prompt, generator=torch.Generator().manual_seed(1)), want
    )
    with torch.no_grad():
        moving.flow_net.head.weight.zero_()  # the network's own field: none
        moving.flow_carry.fill_(1.0 / FLOW_CARRY_GAIN)
        moving.unet.head.weight.zero_()
        moving.unet.head.bias.zero_()  # no change drawn: the frame is the warp alone
    made = moving.predict_next(ctx, acts, prompt, generator=torch.Generator().manual_seed(1))
    pal = Palette.build([("red", 1, ["red"]), ("blue", 1, ["blue"])], ["backdrop"])
    before, after = extract_objects(ctx[:, -1].numpy(), pal), extract_objects(made.numpy(), pal)
    assert np.allclose(after.centroid_px - before.centroid_px, [[[3, 0], [0, 0]]], atol=1e-6)
    assert np.array_equal(after.count_px, before.count_px)  # moved whole
    with pytest.raises(ValueError, match="flow_motion"):
        WorldModel(tiny_config(flow_motion=True))  # no flow to hand the moves to


def test_a_fixed_carry_coasts_from_the_start_and_is_not_trained():
    """``flow_carry_fixed`` is a buffer, not a parameter: a fresh flow (zero head) with it at one
    carries a square on by its last move at once, and no optimiser can change it."""
    from worldsim.metrics.objects import Palette, extract_objects

    ctx = _drifting_squares([(3, 0)])
    acts, captions = torch.zeros(1, 2, 2), [CAPTIONS[0]]
    torch.manual_seed(0)
    model = WorldModel(
        tiny_config(
            sampling_context_noise=0.0, flow_channels=[16, 16], flow_motion=True, flow_carry_fixed=1.0
        )
    ).eval()
    assert "flow_carry" not in dict(model.named_parameters()) and "flow_carry" in model.state_dict()
    with torch.no_grad():
        model.unet.head.weight.zero_()
        model.unet.head.bias.zero_()  # no change drawn: the frame is the warp alone
    made = model.predict_next(
        ctx, acts, model.encode_prompts(captions), generator=torch.Generator().manual_seed(1)
    )
    pal = Palette.build([("red", 1, ["red"]), ("blue", 1, ["blue"])], ["backdrop"])
    before, after = extract_objects(ctx[:, -1].numpy(), pal), extract_objects(made.numpy(), pal)
    assert np.allclose(after.centroid_px - before.centroid_px, [[[3, 0], [0, 0]]], atol=1e-6)
    with pytest.raises(ValueError, match="needs flow_motion"):
        WorldModel(tiny_config(flow_channels=[16, 16], flow_carry_fixed=1.0))
