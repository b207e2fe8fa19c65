"""One training step: the loss math against a hand-written version, the NaN skip, both input paths."""
import pytest
import torch

from sdlora.config import RunConfig
from sdlora.lora import inject, lora_modules, mark_only_lora_trainable, multiplier
from sdlora.models import tiny_components
from sdlora.train import rng
from sdlora.train.noise import NoiseSchedule, pyramid_noise
from sdlora.train.optim import build_optimizer, build_scheduler, param_groups
from sdlora.train.setup import make_accelerator, release_accelerator
from sdlora.train.step import StepContext, compute_loss, train_step


@pytest.fixture
def acc():
    cfg = RunConfig()
    cfg.train.mixed_precision = "no"
    accelerator = make_accelerator(cfg)
    yield accelerator
    release_accelerator(accelerator)


def _setup(train_te=False, **train):
    c = tiny_components(0)
    for m in c.modules().values():
        m.requires_grad_(False)
    inject(c.unet, "unet-attn", rank=2)
    mark_only_lora_trainable(c.unet)
    models = {"unet": c.unet}
    if train_te:
        inject(c.text_encoder, "text-encoder", rank=2)
        mark_only_lora_trainable(c.text_encoder)
        models["text_encoder"] = c.text_encoder
    cfg = RunConfig().train
    for k, v in train.items():
        setattr(cfg, k, v)
    params = [p for m in models.values() for p in m.parameters() if p.requires_grad]
    schedule = NoiseSchedule.from_config(c.scheduler.config, zero_terminal_snr=cfg.zero_terminal_snr)
    ctx = StepContext(unet=c.unet, schedule=schedule, cfg=cfg,
                      device=torch.device("cpu"), weight_dtype=torch.float32, text_encoder=c.text_encoder,
                      train_text_encoder=train_te, vae=c.vae, params=params)
    opt = build_optimizer(param_groups(models, cfg), cfg)
    return c, ctx, opt, build_scheduler(opt, cfg, 10)


def _cached_batch(b=2, latent=8):
    g = torch.Generator().manual_seed(5)
    return {"latents": torch.randn(b, 4, latent, latent, generator=g),
            "encoder_hidden_states": torch.randn(b, 77, 32, generator=g),
            "is_class": torch.tensor([False, True])[:b]}


def test_loss_matches_hand_written_formula():
    c, ctx, _, _ = _setup(min_snr_gamma=5.0, prior_loss_weight=0.5, noise_offset=0.1, timestep_min=100,
                          timestep_max=900, prediction_type="v_prediction")
    batch = _cached_batch()
    with torch.no_grad():
        ours = compute_loss(ctx, batch, rng.generator(1, "t")).item()
        g = rng.generator(1, "t")
        x0 = batch["latents"]
        noise = torch.randn(x0.shape, generator=g) + 0.1 * torch.randn((2, 4, 1, 1), generator=g)
        t = torch.randint(100, 900, (2,), generator=g)
        abar = ctx.schedule.alphas_cumprod[t].view(-1, 1, 1, 1)
        noisy = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
        target = abar.sqrt() * noise - (1 - abar).sqrt() * x0
        pred = c.unet(noisy, t, batch["encoder_hidden_states"]).sample
        snr = (abar / (1 - abar)).flatten()
        w = torch.clamp(snr, max=5.0) / (snr + 1) * torch.tensor([1.0, 0.5])
        expected = (((pred - target) ** 2).mean(dim=(1, 2, 3)) * w).mean().item()
    assert ours == pytest.approx(expected, rel=1e-5)


def _nonzero_lora(*models):
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in models:
            for name, p in m.named_parameters():
                if p.requires_grad:
                    p.copy_(0.3 * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("train_te", [False, True])
def test_base_prior_target_is_the_frozen_models_prediction(train_te):
    """prior_target = "base": a class item's target is the prediction with the LoRA off (text encoder too),
    a constant: the gradients are those of the hand-written loss with that prediction computed without them."""
    c, ctx, _, _ = _setup(train_te=train_te, prior_target="base", prior_loss_weight=0.5)
    _nonzero_lora(c.unet, *([c.text_encoder] if train_te else []))
    batch = {"latents": _cached_batch()["latents"], "input_ids": torch.randint(0, 1000, (2, 77)),
             "is_class": torch.tensor([False, True])}
    ours = compute_loss(ctx, batch, rng.generator(1, "t"))
    ours.backward()
    our_grads = [p.grad.clone() for p in ctx.params]
    for p in ctx.params:
        p.grad = None
    g = rng.generator(1, "t")
    x0 = batch["latents"]
    noise = torch.randn(x0.shape, generator=g)
    t = torch.randint(0, 1000, (2,), generator=g)
    noisy = ctx.schedule.add_noise(x0, noise, t)
    pred = c.unet(noisy, t, c.text_encoder(batch["input_ids"])[0]).sample
    with torch.no_grad(), multiplier([c.unet, c.text_encoder], "default", 0.0):
        base = c.unet(noisy, t, c.text_encoder(batch["input_ids"])[0]).sample
    per_item = torch.stack([((pred[0] - noise[0]) ** 2).mean(), ((pred[1] - base[1]) ** 2).mean()])
    expected = (per_item * torch.tensor([1.0, 0.5])).mean()
    expected.backward()
    assert ours.item() == pytest.approx(expected.item(), rel=1e-5)
    for ours_grad, p in zip(our_grads, ctx.params):
        torch.testing.assert_close(ours_grad, p.grad, rtol=1e-4, atol=1e-7)
    assert ((pred[1] - base[1]) ** 2).mean() > 1e-4  # the LoRA changes the class item: a loss to learn from
    assert all(w.adapters["default"].multiplier == 1.0 for w in lora_modules(c.unet).values())  # restored


def test_base_prior_target_gives_no_loss_while_the_lora_changes_nothing():
    """A fresh LoRA (B = 0) is the base model: its class items have no loss and no gradient."""
    c, ctx, _, _ = _setup(prior_target="base")
    batch = _cached_batch()
    batch["is_class"] = torch.tensor([True, True])
    loss = compute_loss(ctx, batch, rng.generator(1, "t"))
    assert loss.item() == 0.0
    loss.backward()
    assert all(p.grad is None or not p.grad.any() for p in ctx.params)


def test_every_loss_and_noise_option_matches_hand_written_formula():
    c, ctx, _, _ = _setup(prediction_type="v_prediction", zero_terminal_snr=True, min_snr_gamma=5.0,
                          debiased_estimation=True, prior_loss_weight=0.5, loss_type="huber", huber_schedule="snr",
                          huber_c=0.2, ip_noise_gamma=0.1, multires_noise_iterations=3, multires_noise_discount=0.5,
                          timestep_sampling="logit_normal", logit_mean=0.3, logit_std=1.2, timestep_shift=2.0)
    batch = _cached_batch()
    mask = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(9))
    batch["loss_mask"] = mask
    with torch.no_grad():
        ours = compute_loss(ctx, batch, rng.generator(1, "t")).item()
        g = rng.generator(1, "t")
        x0 = batch["latents"]
        noise = pyramid_noise(torch.randn(x0.shape, generator=g), g, 3, 0.5)
        u = torch.sigmoid(0.3 + 1.2 * torch.randn(2, generator=g))
        t = (1000 * 2 * u / (1 + u)).long().clamp(0, 999)
        model_noise = noise + 0.1 * torch.randn(x0.shape, generator=g)
        root = NoiseSchedule.from_config(c.scheduler.config).alphas_cumprod.double().sqrt()
        abar = (((root - root[-1]) * root[0] / (root[0] - root[-1])) ** 2)[t].float().view(-1, 1, 1, 1)
        noisy = abar.sqrt() * x0 + (1 - abar).sqrt() * model_noise
        target = abar.sqrt() * noise - (1 - abar).sqrt() * x0
        pred = c.unet(noisy, t, batch["encoder_hidden_states"]).sample
        snr = abar / (1 - abar)
        w = torch.clamp(snr, max=5.0) / (snr + 1) / (torch.clamp(snr, max=1000) + 1) * torch.tensor([1, 0.5]).view(-1, 1, 1, 1)
        huber_c = (1 - 0.2) / (1 + ((1 - abar) / abar).sqrt()) ** 2 + 0.2
        e = 2 * huber_c * (((pred - target) ** 2 + huber_c**2).sqrt() - huber_c)
        per_sample = (mask * e).sum(dim=(1, 2, 3)) / (4 * mask.sum(dim=(1, 2, 3)))
        expected = (per_sample * w.flatten()).mean().item()
    assert ours == pytest.approx(expected, rel=1e-5)


def test_black_mask_gives_no_loss_and_no_gradient():
    c, ctx, _, _ = _setup()
    lora_up = [p for name, p in c.unet.named_parameters() if p.requires_grad and "up" in name]

    def grads(batch):
        for p in ctx.params:
            p.grad = None
        loss = compute_loss(ctx, batch, rng.generator(1, "m"))
        loss.backward()
        return loss.item(), [p.grad.clone() for p in lora_up]

    batch = _cached_batch()
    batch["loss_mask"] = torch.zeros(2, 1, 8, 8)
    loss, black = grads(batch)
    assert loss == 0.0 and all(torch.count_nonzero(gr) == 0 for gr in black)
    batch["loss_mask"][1] = 1.0  # sample 0 black, sample 1 white
    loss, half = grads(batch)
    batch["latents"][0] *= -3.0  # what a black-masked sample holds cannot matter
    loss2, changed = grads(batch)
    assert loss > 0 and loss2 == loss and any(torch.count_nonzero(gr) > 0 for gr in half)
    for a, b in zip(half, changed):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)


def test_step_updates_lora_and_skips_non_finite(acc):
    c, ctx, opt, sched = _setup()
    before = [p.detach().clone() for p in ctx.params]
    result = train_step(acc, ctx, [_cached_batch()], opt, sched, 0)
    assert not result.skipped and result.grad_norm > 0 and result.loss > 0
    after = [p.detach().clone() for p in ctx.params]
    assert any(not torch.equal(a, b) for a, b in zip(before, after))
    bad = _cached_batch()
    bad["latents"][0, 0, 0, 0] = float("nan")
    skipped = train_step(acc, ctx, [bad, _cached_batch()], opt, sched, 1)
    assert skipped.skipped and skipped.grad_norm is None
    assert all(torch.equal(a, p) for a, p in zip(after, ctx.params))  # untouched
    assert all(p.grad is None for p in ctx.params)
    assert sched.last_epoch == 2  # the schedule still follows the step count


def test_uncached_pixels_and_tokens_train_the_text_encoder(acc):
    c, ctx, opt, sched = _setup(train_te=True)
    ids = c.tokenizer(["a red square", "a cat"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    batch = {"pixel_values": torch.rand(2, 3, 16, 16) * 2 - 1, "input_ids": ids}
    te_params = [p for p in c.text_encoder.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in te_params]
    result = train_step(acc, ctx, [batch], opt, sched, 0)
    assert not result.skipped
    # up starts at zero, so only `up` moves on the first step: some TE weight must change
    assert any(not torch.equal(a, p) for a, p in zip(before, te_params))
