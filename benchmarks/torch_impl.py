"""The same models and train steps in PyTorch (eager), for side-by-side benchmarks.

Mirrors raegan_jax exactly in architecture, losses and optimizers (SPEC §2–4):
the MNIST and CIFAR-10 autoencoders, the dense discriminator, the recursive
passes, the ``cycle`` objective, BCE/MSE reconstruction, Adam 5e-3 / 1e-3.
It is written the way a PyTorch user would write it (eager, a Python loop over
the passes, only the stage's network updated). Install with
``pip install torch==2.13.0`` (the CPU build on the project's machines).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


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
      compile: wrap the AE and D in ``torch.compile``.
    """

    def __init__(self, dataset, family, passes=1, recon_loss=None, rae_objective="cycle",
                 adv_weight=1.0, ae_lr=5e-3, d_lr=1e-3, seed=0, compile=False):
        torch.manual_seed(seed)
        self.dataset, self.family, self.passes = dataset, family, passes
        self.recon_loss = recon_loss or ("mse" if dataset == "mnist" else "bce")
        self.objective = rae_objective if family in ("rae", "raegan") else "last"
        self.adv_weight = adv_weight
        self.ae = MnistAE() if dataset == "mnist" else Cifar10AE()
        self.ae_opt = torch.optim.Adam(self.ae.parameters(), lr=ae_lr)
        self.gan = family in ("aegan", "raegan")
        self.step_count = 0
        if self.gan:
            feat, widths = (784, (512, 256, 128)) if dataset == "mnist" else (3072, (1024, 512, 256))
            self.disc = Discriminator(feat, widths)
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
        s = self.step_count % self.passes  # the cycle: sample i uses pass (s + i) mod P
        idx = (s + torch.arange(x.shape[0])) % self.passes
        return per.gather(0, idx[None]).mean()

    def ae_step(self, x):
        """Reconstruction (+ adversarial for GAN families) update of the AE; D frozen."""
        self.ae_opt.zero_grad(set_to_none=True)
        logits = self._passes(x)
        loss = self._objective(logits, x)
        if self.gan:
            p, b = logits.shape[:2]
            fake = self.d_fn(torch.sigmoid(logits).reshape(p * b, *x.shape[1:]))
            adv = F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake), reduction="none")
            loss = loss + self.adv_weight * adv.reshape(p, b).mean(1).sum()
        loss.backward()
        self.ae_opt.step()
        self.step_count += 1
        return loss

    def d_step(self, x):
        """D learns real -> 1, every pass's reconstruction -> 0; AE frozen."""
        with torch.no_grad():
            fakes = torch.sigmoid(self._passes(x))
        self.d_opt.zero_grad(set_to_none=True)
        p, b = fakes.shape[:2]
        logits = self.d_fn(torch.cat([x, fakes.reshape(p * b, *x.shape[1:])]))
        target = torch.cat([torch.ones(b), torch.zeros(p * b)])
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
