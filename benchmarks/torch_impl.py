"""The same models and train steps in PyTorch (eager): the twin of raegan_jax.

The architectures (SPEC §2), reconstruction losses (BCE/MSE), the
non-saturating adversarial term, D's loss and Adam (5e-3 / 1e-3 by default)
are those of raegan_jax, and ``tests/test_torch_parity.py`` checks it: with
the same weights (:func:`load_jax_params`) the two give the same outputs,
losses and gradients, and the same losses after several Adam steps of each
family. The ``cycle`` objective is computed here, on its own (:func:`cycle_pass`,
written from SPEC §3 and the 32-bit hash that draws each sweep's start), with the
step counted as raegan_jax counts it (every step, D steps too): the parity test then
checks raegan_jax's schedule against an independent one. It is written the way a
PyTorch user would write it (eager, a Python loop over the passes, only the
stage's network updated); what it does not have is raegan_jax's stage
policies, schedules and clipping: the caller picks ``ae_step`` or ``d_step``.
Install with ``pip install torch==2.13.0`` (the CPU build on the project's
machines).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

_M32 = 0xFFFFFFFF


def _lowbias32(x: int) -> int:
    """The "lowbias32" 32-bit integer hash (Chris Wellons), on Python ints."""
    x ^= x >> 16
    x = (x * 0x7FEB352D) & _M32
    x ^= x >> 15
    x = (x * 0x846CA68B) & _M32
    return x ^ (x >> 16)


def cycle_pass(seed: int, step: int, row: int, steps_per_sweep: int, batch_size: int,
               passes: int) -> int:
    """The report's cycle (SPEC §3): within sweep ``step // steps_per_sweep`` sample
    i = k * batch_size + row (k = step mod steps_per_sweep) trains on pass (s + i) mod
    passes, its start s = lowbias32(lowbias32(seed) ^ sweep) mod passes."""
    sweep, k = divmod(step, steps_per_sweep)
    start = _lowbias32(_lowbias32(seed & _M32) ^ sweep) % passes
    return (start + k * batch_size + row) % passes


class MnistAE(nn.Module):
    """28x28x1 -> latent 16 -> 28x28x1 logits (SPEC §2)."""

    def __init__(self, c=(16, 32, 64), dense=(128, 64), latent=16):
        super().__init__()
        self.enc = nn.Sequential(
            nn.Conv2d(1, c[0], 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c[0], c[1], 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c[1], c[2], 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(9 * c[2], dense[0]), nn.ReLU(),
            nn.Linear(dense[0], dense[1]), nn.ReLU(), nn.Linear(dense[1], latent))
        self.dec = nn.Sequential(
            nn.Linear(latent, dense[1]), nn.ReLU(), nn.Linear(dense[1], dense[0]), nn.ReLU(),
            nn.Linear(dense[0], 9 * c[2]), nn.ReLU(), nn.Unflatten(1, (c[2], 3, 3)),
            nn.ConvTranspose2d(c[2], c[1], 3, stride=2), nn.ReLU(),
            nn.ConvTranspose2d(c[1], c[0], 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
            nn.ConvTranspose2d(c[0], 1, 3, stride=2, padding=1, output_padding=1))

    def forward(self, x):
        return self.dec(self.enc(x))


class Cifar10AE(nn.Module):
    """32x32x3 -> 4x4x64 -> 32x32x3 logits, 7 conv layers each side (SPEC §2)."""

    def __init__(self, c=(8, 16, 32, 64)):
        super().__init__()
        enc = [nn.Conv2d(3, c[0], 3, padding=1), nn.ReLU()]
        for a, b in zip(c[:-1], c[1:]):
            enc += [nn.Conv2d(a, b, 4, stride=2, padding=1), nn.ReLU(),
                    nn.Conv2d(b, b, 3, padding=1), nn.ReLU()]
        dec = []
        for a, b in zip(c[:0:-1], c[-2::-1]):
            dec += [nn.Conv2d(a, a, 3, padding=1), nn.ReLU(),
                    nn.ConvTranspose2d(a, b, 4, stride=2, padding=1), nn.ReLU()]
        dec += [nn.Conv2d(c[0], 3, 3, padding=1)]
        self.enc, self.dec = nn.Sequential(*enc), nn.Sequential(*dec)

    def forward(self, x):
        return self.dec(self.enc(x))


class Discriminator(nn.Module):
    """Flattened image -> hidden widths (LeakyReLU 0.2) -> 1 logit."""

    def __init__(self, in_features, widths):
        super().__init__()
        layers, d = [nn.Flatten()], in_features
        for w in widths:
            layers += [nn.Linear(d, w), nn.LeakyReLU(0.2)]
            d = w
        layers.append(nn.Linear(d, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)[:, 0]


def recon_per_sample(logits, x, kind):
    if kind == "mse":
        return ((torch.sigmoid(logits) - x) ** 2).flatten(1).mean(1)
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).mean(1)


class TorchTrainer:
    """Train steps of one family, mirroring raegan_jax.steps.

    Args:
      dataset: "mnist" or "cifar10".
      family: "ae", "rae", "aegan" or "raegan".
      passes: recursive applications of the AE.
      recon_loss: "mse" or "bce".
      rae_objective: "cycle", "sum" or "last" (recursive families).
      adv_weight: weight of the non-saturating adversarial term.
      ae_lr, d_lr: Adam learning rates.
      seed: torch's seed for the initial weights, and the run seed of the
        ``cycle`` schedule (raegan_jax's ``train.seed``).
      steps_per_epoch: train steps per sweep over the data (the ``cycle``
        schedule places each sample in its sweep).
      compile: wrap the AE and D in ``torch.compile``.
      device: where the networks live ("cpu", "cuda"); inputs must be there too.
    """

    def __init__(self, dataset, family, passes=1, recon_loss=None, rae_objective="cycle",
                 adv_weight=1.0, ae_lr=5e-3, d_lr=1e-3, seed=0, steps_per_epoch=1, compile=False,
                 device="cpu"):
        torch.manual_seed(seed)
        self.seed, self.steps_per_epoch = seed, steps_per_epoch
        self.dataset, self.family, self.passes = dataset, family, passes
        self.recon_loss = recon_loss or ("mse" if dataset == "mnist" else "bce")
        self.objective = rae_objective if family in ("rae", "raegan") else "last"
        self.adv_weight = adv_weight
        self.ae = (MnistAE() if dataset == "mnist" else Cifar10AE()).to(device)
        self.ae_opt = torch.optim.Adam(self.ae.parameters(), lr=ae_lr)
        self.gan = family in ("aegan", "raegan")
        self.step_count = 0
        if self.gan:
            feat, widths = (784, (512, 256, 128)) if dataset == "mnist" else (3072, (1024, 512, 256))
            self.disc = Discriminator(feat, widths).to(device)
            self.d_opt = torch.optim.Adam(self.disc.parameters(), lr=d_lr)
        self.ae_fn = torch.compile(self.ae) if compile else self.ae
        self.d_fn = (torch.compile(self.disc) if compile else self.disc) if self.gan else None

    def _passes(self, x):
        outs, y = [], x
        for _ in range(self.passes):
            logits = self.ae_fn(y)
            outs.append(logits)
            y = torch.sigmoid(logits)
        return torch.stack(outs)  # [P, B, C, H, W]

    def _objective(self, logits, x):
        per = torch.stack([recon_per_sample(l, x, self.recon_loss) for l in logits])  # [P, B]
        if self.objective == "sum":
            return per.mean(1).sum()
        if self.objective == "last" or self.passes == 1:
            return per[-1].mean()
        return per.gather(0, self.pass_index(x.shape[0]).to(per.device)[None]).mean()

    def pass_index(self, batch_size):
        """[B] zero-based pass of each row of this step under the ``cycle`` objective
        (this module's own :func:`cycle_pass`)."""
        return torch.tensor([cycle_pass(self.seed, self.step_count, i, self.steps_per_epoch,
                                        batch_size, self.passes) for i in range(batch_size)])

    def ae_step(self, x, adversarial=True):
        """Reconstruction (+ adversarial for GAN families) update of the AE; D frozen."""
        self.ae_opt.zero_grad(set_to_none=True)
        logits = self._passes(x)
        loss = self._objective(logits, x)
        if self.gan and adversarial:
            p, b = logits.shape[:2]
            fake = self.d_fn(torch.sigmoid(logits).reshape(p * b, *x.shape[1:]))
            adv = F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake), reduction="none")
            loss = loss + self.adv_weight * adv.reshape(p, b).mean(1).sum()
        loss.backward()
        self.ae_opt.step()
        self.step_count += 1
        return loss

    def recon_step(self, x):
        """Reconstruction-only update of the AE (pretraining, the phases' first sweep)."""
        return self.ae_step(x, adversarial=False)

    def d_step(self, x):
        """D learns real -> 1, every pass's reconstruction -> 0; AE frozen."""
        with torch.no_grad():
            fakes = torch.sigmoid(self._passes(x))
        self.d_opt.zero_grad(set_to_none=True)
        p, b = fakes.shape[:2]
        logits = self.d_fn(torch.cat([x, fakes.reshape(p * b, *x.shape[1:])]))
        target = torch.cat([torch.ones(b, device=x.device), torch.zeros(p * b, device=x.device)])
        real_loss = F.binary_cross_entropy_with_logits(logits[:b], target[:b])
        fake_loss = F.binary_cross_entropy_with_logits(logits[b:], target[b:])
        loss = 0.5 * (real_loss + fake_loss)
        loss.backward()
        self.d_opt.step()
        self.step_count += 1
        return loss

    def step(self, x):
        """The family's heaviest per-step work: the AE update (for GAN families, the AE stage)."""
        return self.ae_step(x)


# --------------------------------------------------------------------------- weights from JAX

def _conv(k):
    """Flax conv kernel [kh, kw, in, out] -> torch Conv2d weight [out, in, kh, kw]."""
    return torch.from_numpy(np.ascontiguousarray(np.asarray(k).transpose(3, 2, 0, 1)))


def _conv_t(k):
    """Flax ConvTranspose kernel [kh, kw, in, out] (not flipped) -> torch ConvTranspose2d
    weight [in, out, kh, kw], which torch applies flipped."""
    return torch.from_numpy(np.ascontiguousarray(np.asarray(k)[::-1, ::-1].transpose(2, 3, 0, 1)))


def _dense(k, rows_hwc=None, cols_hwc=None):
    """Flax Dense kernel [in, out] -> torch Linear weight [out, in].

    ``rows_hwc``/``cols_hwc`` = (h, w, c) when the input/output is a flattened
    image: Flax flattens NHWC, torch NCHW, so those rows/columns are permuted.
    """
    k = np.asarray(k)
    if rows_hwc is not None:
        h, w, c = rows_hwc
        k = k.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(h * w * c, -1)
    if cols_hwc is not None:
        h, w, c = cols_hwc
        k = k.reshape(-1, h, w, c).transpose(0, 3, 1, 2).reshape(-1, h * w * c)
    return torch.from_numpy(np.array(k.T))


def _vec(b):
    return torch.from_numpy(np.array(b))  # a writable copy


def load_jax_params(trainer: "TorchTrainer", ae_params, d_params=None) -> None:
    """Copies raegan_jax parameters (``state.ae_params``, ``state.d_params``) into the twin.

    Optimizer states are reset (fresh Adam), as for a fresh JAX state.
    """
    p = {k: {n: np.asarray(v) for n, v in layer.items()} for k, layer in ae_params.items()}
    mods = []
    if trainer.dataset == "mnist":
        enc, dec = list(trainer.ae.enc), list(trainer.ae.dec)
        c = trainer.ae.dec[4].weight.shape[0] // 9  # the 3x3xC unflatten
        mods += [(enc[0], "enc_conv0", _conv), (enc[3], "enc_conv1", _conv),
                 (enc[6], "enc_conv2", _conv),
                 (enc[10], "enc_dense0", lambda k: _dense(k, rows_hwc=(3, 3, c))),
                 (enc[12], "enc_dense1", _dense), (enc[14], "enc_latent", _dense),
                 (dec[0], "dec_dense0", _dense), (dec[2], "dec_dense1", _dense),
                 (dec[4], "dec_dense2", lambda k: _dense(k, cols_hwc=(3, 3, c)),
                  lambda b: b.reshape(3, 3, c).transpose(2, 0, 1).reshape(-1)),
                 (dec[7], "dec_up0", _conv_t), (dec[9], "dec_up1", _conv_t),
                 (dec[11], "dec_up2", _conv_t)]
    else:
        convs = [m for m in trainer.ae.enc if isinstance(m, nn.Conv2d)]
        names = ["enc_stem"] + [f"enc_{t}{k}" for k in range(3) for t in ("down", "conv")]
        mods += [(m, n, _conv) for m, n in zip(convs, names)]
        dec = [m for m in trainer.ae.dec if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
        names = [f"dec_{t}{k}" for k in range(3) for t in ("conv", "up")] + ["dec_out"]
        mods += [(m, n, _conv_t if isinstance(m, nn.ConvTranspose2d) else _conv)
                 for m, n in zip(dec, names)]
    if d_params is not None:
        shape = (28, 28, 1) if trainer.dataset == "mnist" else (32, 32, 3)
        lin = [m for m in trainer.disc.net if isinstance(m, nn.Linear)]
        names = [f"dense{k}" for k in range(len(lin) - 1)] + ["logit"]
        p.update({k: {n: np.asarray(v) for n, v in layer.items()} for k, layer in d_params.items()})
        mods += [(m, n, (lambda k: _dense(k, rows_hwc=shape)) if i == 0 else _dense)
                 for i, (m, n) in enumerate(zip(lin, names))]
    with torch.no_grad():
        for mod, name, weight, *bias in mods:  # bias: a permutation where outputs are an image
            w = weight(p[name]["kernel"])
            assert mod.weight.shape == w.shape, (name, mod.weight.shape, w.shape)
            mod.weight.copy_(w)
            mod.bias.copy_(_vec(bias[0](p[name]["bias"]) if bias else p[name]["bias"]))
    trainer.ae_opt = torch.optim.Adam(trainer.ae.parameters(), lr=trainer.ae_opt.defaults["lr"])
    if trainer.gan:
        trainer.d_opt = torch.optim.Adam(trainer.disc.parameters(), lr=trainer.d_opt.defaults["lr"])
