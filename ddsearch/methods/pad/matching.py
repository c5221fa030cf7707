"""PAD's trajectory matching (MTT -> DATM -> PAD) behind the :class:`Distiller` interface.

One iteration:

1. draw an expert ``k`` and a start epoch ``t ~ U[min_start_epoch, upper)``, where ``upper`` grows
   linearly from ``max_start_epoch`` to ``max_start_epoch_final`` (if set) over
   ``expansion_iterations`` (default: all iterations);
2. from ``theta*_t`` take ``syn_steps`` SGD steps on the synthetic set with the learnable step size
   ``syn_lr``, each on a ``batch_syn`` chunk of a fresh permutation, with DSA, through
   ``torch.func.functional_call`` on one flat parameter vector (graph kept for the meta-gradient);
3. loss = ``sum_K (theta_hat - theta*_{t+M})^2 / sum_K (theta*_t - theta*_{t+M})^2`` where ``K``
   leaves out the shallowest ``floor(alpha * P)`` entries of the flat vector (layer order), as the
   paper describes; ``selection: loss`` leaves out instead the ``floor(alpha * P)`` entries with the
   smallest error this iteration, as the released code does;
4. SGD with momentum on the images (``lr_img``), ``syn_lr`` (``lr_lr``) and the soft labels
   (``lr_y``, ``momentum_y``); the update is skipped when the loss exceeds ``skip_threshold``
   or is not finite. The skip is a masked update on the device, so ``step()`` never syncs.

Soft labels are logits (targets = softmax). They start from the experts' logits on real images
that the experts classify correctly (DATM), and the real-init images are drawn from those images.

Differences from the reference code, none of them in the maths of the loss:
- DSA draws its parameters per image from the run's generator (as MTT's unrolled steps do; there
  is no real batch to share a Siamese draw with), never from the global RNG;
- experts are drawn uniformly at random per iteration instead of cycling through shuffled files;
- the soft-label init averages, per image, the logits of every expert that classifies it
  correctly (DATM uses one expert's timestamp to pick images) and prefers images that most
  experts get right;
- the learned lr, labels and optimiser momenta are part of the checkpoint, so a resumed run is
  bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from ddsearch.methods.pad.settings import PADSettings
from ddsearch.data import RealData
from ddsearch.errors import DDSearchError
from ddsearch.methods.base import Distiller
from ddsearch.models import seeded_network
from ddsearch.methods.pad.experts import ExpertBuffer, get_experts
from ddsearch.methods.pad.flat import ParamLayout, forward_flat, kept_from
from ddsearch.precision import autocast


def matching_loss(
    student: torch.Tensor, start: torch.Tensor, target: torch.Tensor, keep_from: int = 0
) -> torch.Tensor:
    """Normalised parameter distance over the kept entries ``[keep_from:]`` of the flat vectors."""
    num = (student[keep_from:] - target[keep_from:]).square().sum()
    den = (start[keep_from:] - target[keep_from:]).square().sum()
    return num / den


def loss_ranked_matching_loss(
    student: torch.Tensor, start: torch.Tensor, target: torch.Tensor, drop: int = 0
) -> torch.Tensor:
    """Normalised parameter distance over all but the ``drop`` entries the student already matches best.

    The released PAD code's selection: entries are ranked by their own squared error this iteration,
    and the numerator and denominator both sum over the entries that are kept.
    """
    if drop <= 0:
        return matching_loss(student, start, target)
    err = (student - target).square()
    kept = torch.topk(err.detach(), err.numel() - drop, sorted=False).indices
    return err[kept].sum() / (start[kept] - target[kept]).square().sum()


def start_epoch_upper(settings: PADSettings, iteration: int) -> int:
    """Exclusive upper bound of the start epoch at ``iteration``: it grows linearly from max_start_epoch to
    max_start_epoch_final over expansion_iterations (default: all), so a shorter run never reaches the end."""
    s = settings
    if s.max_start_epoch_final is None:
        return s.max_start_epoch
    span = s.expansion_iterations or s.iterations
    grown = s.max_start_epoch + int((s.max_start_epoch_final - s.max_start_epoch) * iteration / span)
    return min(grown, s.max_start_epoch_final)


class PAD(Distiller):
    """Trajectory matching with difficulty-aligned experts and deep-parameter selection."""

    method_name = "pad"
    settings: PADSettings

    @classmethod
    def validate(cls, settings: PADSettings, data: RealData) -> None:
        """Also: the score/expert cache folder must be writable (checked before any run is created)."""
        from ddsearch.methods.pad._cache import cache_root
        from ddsearch.paths import ensure_writable_dir

        super().validate(settings, data)
        ensure_writable_dir(cache_root(settings.cache_dir), "PAD cache folder")

    def __init__(
        self, settings: PADSettings, data: RealData, seed: int = 0, progress: bool = True, precision: str = "auto"
    ) -> None:
        if not isinstance(settings, PADSettings):
            raise DDSearchError(f"PAD needs PADSettings, got {type(settings).__name__}")
        self.validate(settings, data)
        device = data.train_x.device
        # Its own weights are never used (the flat vector replaces them); a fixed seed keeps the global RNG untouched.
        self.net = seeded_network(settings.arch, data.channels, data.num_classes, data.image_size, 0).to(device).train()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.layout = ParamLayout.of(self.net)
        self.buffers = {k: v for k, v in self.net.named_buffers()}
        self.experts: ExpertBuffer = get_experts(data, settings, seed, progress=progress, precision=precision)
        self._check_experts(settings)
        # On an accelerator the whole buffer goes to the device once; on the CPU it stays memory-mapped.
        if device.type == "cpu":
            self.trajectories: list[torch.Tensor] | torch.Tensor = self.experts.trajectories
        else:
            self.trajectories = torch.stack(self.experts.trajectories).to(device)
        self._init_labels: torch.Tensor | None = None
        super().__init__(settings, data, seed, progress, precision)  # draws the initial images through _initial_images
        s = self.settings
        if s.soft_labels:
            assert self._init_labels is not None
            self.labels = self._init_labels.to(self.device).clone().requires_grad_(s.lr_y > 0)
        self.syn_lr = torch.tensor(float(s.lr_teacher), device=self.device).requires_grad_(s.lr_lr > 0)
        self.momenta = {
            "images": torch.zeros_like(self.images),
            "lr": torch.zeros_like(self.syn_lr),
            "labels": torch.zeros_like(self.labels, dtype=torch.float32) if s.soft_labels else torch.zeros(0),
        }

    @property
    def keep_from(self) -> int:
        """How many flat entries leave the loss (alpha's share): the first ones under the depth rule."""
        return kept_from(self.layout.total, self.settings.alpha)

    # ---- set-up ---------------------------------------------------------------------------
    def _check_experts(self, s: PADSettings) -> None:
        top = max(s.max_start_epoch, s.max_start_epoch_final or 0)
        if top + s.expert_epochs > self.experts.epochs:
            raise DDSearchError(
                f"max_start_epoch ({top}) + expert_epochs ({s.expert_epochs}) is beyond the "
                f"{self.experts.epochs} epochs the experts trained"
            )
        if self.experts.layout != self.layout:
            raise DDSearchError(f"the cached experts do not have the parameters of {s.arch}; rebuild them")

    def _initial_images(self) -> torch.Tensor:
        """Real images the experts classify correctly (DATM) or the herding control's picks; experts' logits as labels."""
        data, ipc = self.data, self.settings.ipc
        logits = torch.stack([lg for lg in self.experts.logits])  # [K, N, C], CPU
        correct = logits.argmax(dim=2) == data.train_y.cpu()[None]  # [K, N]
        if self.settings.init == "noise":
            shape = (data.num_classes * ipc, data.channels, *data.image_size)
            images = torch.randn(shape, generator=self.generator).to(self.device)
            rows = []
            for c in range(data.num_classes):
                idx = data.class_indices[c].cpu()
                ok = correct[:, idx].float()[..., None]  # [K, n, 1]
                mean = (logits[:, idx] * ok).sum((0, 1)) / ok.sum().clamp(min=1)
                rows.append(mean.expand(ipc, -1))
            self._init_labels = torch.cat(rows).float()
            return images
        herded = self._herding_rows().cpu().view(data.num_classes, ipc) if self.settings.init == "herding" else None
        picks, labels = [], []
        for c in range(data.num_classes):
            if herded is not None:
                chosen = herded[c]
            else:
                idx = data.class_indices[c].cpu()
                votes = correct[:, idx].sum(dim=0)  # how many experts get each image right
                perm = torch.randperm(len(idx), generator=self.generator)
                chosen = idx[perm[torch.sort(votes[perm], descending=True, stable=True).indices[:ipc]]]
            ok = correct[:, chosen].float()  # [K, ipc]
            weight = torch.where(ok.sum(0, keepdim=True) > 0, ok, torch.ones_like(ok))
            lab = (logits[:, chosen] * weight[..., None]).sum(0) / weight.sum(0)[:, None]
            picks.append(chosen)
            labels.append(lab)
        self._init_labels = torch.cat(labels).float()
        rows = torch.cat(picks).to(data.train_x.device)
        return data.train_x[rows].detach().clone()

    # ---- one iteration --------------------------------------------------------------------
    def start_epoch_upper(self, iteration: int | None = None) -> int:
        """Exclusive upper bound of the start epoch at ``iteration`` (grows if max_start_epoch_final is set)."""
        return start_epoch_upper(self.settings, self.iteration if iteration is None else iteration)

    def _draw(self, n: int) -> int:
        return int(torch.randint(0, n, (1,), generator=self.generator))

    def _trajectory_pair(self, expert: int, start_epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        traj = self.trajectories[expert]
        end = start_epoch + self.settings.expert_epochs
        return traj[start_epoch].to(self.device), traj[end].to(self.device)

    def unroll(self, start: torch.Tensor) -> torch.Tensor:
        """``syn_steps`` differentiable SGD steps from ``start`` on (chunks of) the synthetic set."""
        s = self.settings
        n = self.images.shape[0]
        batch = min(s.batch_syn or n, n)
        soft = s.soft_labels
        targets = self.labels.softmax(dim=1) if soft else self.labels
        w = start.detach().requires_grad_(True)
        chunks: list[torch.Tensor] = []
        for _ in range(s.syn_steps):
            if batch < n:
                if not chunks:
                    perm = torch.randperm(n, generator=self.generator).to(self.device, non_blocking=True)
                    chunks = list(torch.split(perm, batch))
                idx = chunks.pop(0)
                x, y = self.images[idx], targets[idx]
            else:
                x, y = self.images, targets
            x = self.dsa(x, generator=self.generator)
            with autocast(self.precision, self.device):  # w stays the fp32 master; ops cast per use
                out = forward_flat(self.net, self.layout, w, x, self.buffers)
            ce = F.cross_entropy(out.float(), y)
            (g,) = torch.autograd.grad(ce, w, create_graph=True)
            w = w - self.syn_lr * g
        return w

    def matching_loss(self, expert: int | None = None, start_epoch: int | None = None) -> torch.Tensor:
        """The normalised matching loss of one draw, with the graph to images, syn_lr and labels."""
        s = self.settings
        if expert is None:
            expert = self._draw(len(self.experts))
        if start_epoch is None:
            low, high = s.min_start_epoch, self.start_epoch_upper()
            start_epoch = low + self._draw(high - low)
        start, target = self._trajectory_pair(expert, start_epoch)
        student = self.unroll(start)
        if s.selection == "loss":
            return loss_ranked_matching_loss(student, start, target, self.keep_from)
        return matching_loss(student, start, target, self.keep_from)

    def _learnables(self) -> list[tuple[str, torch.Tensor, float, float]]:
        s = self.settings
        out = [("images", self.images, s.lr_img, s.momentum)]
        if s.lr_lr > 0:
            out.append(("lr", self.syn_lr, s.lr_lr, s.momentum))
        if s.soft_labels and s.lr_y > 0:
            out.append(("labels", self.labels, s.lr_y, s.momentum_y))
        return out

    def step(self) -> torch.Tensor:
        loss = self.matching_loss()
        learnables = self._learnables()
        grads = torch.autograd.grad(loss, [t for _, t, _, _ in learnables])
        ok = torch.isfinite(loss)
        if self.settings.skip_threshold is not None:
            ok = ok & (loss <= self.settings.skip_threshold)
        with torch.no_grad():
            for (name, param, lr, mu), g in zip(learnables, grads):
                buf = self.momenta[name]
                buf.copy_(torch.where(ok, buf * mu + g, buf))  # torch SGD: buf = mu * buf + g
                param.copy_(torch.where(ok, param - lr * buf, param))
        self.iteration += 1
        return loss.detach()

    # ---- interface ------------------------------------------------------------------------
    def learned_lr(self) -> float:
        return float(self.syn_lr.detach())

    def current_labels(self) -> torch.Tensor:
        return self.labels

    def extra_state(self) -> dict[str, Any]:
        return {
            "syn_lr": self.syn_lr.detach().clone(),
            "labels": self.labels.detach().clone(),
            "momenta": {k: v.detach().clone() for k, v in self.momenta.items()},
            "experts_key": self.experts.key,
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if state.get("experts_key") != self.experts.key:
            raise DDSearchError(
                "this checkpoint was made with other expert trajectories (different data, expert or "
                "scheduler settings); it cannot resume this run"
            )
        labels = state["labels"]
        if labels.shape != self.labels.shape or labels.dtype != self.labels.dtype:
            raise DDSearchError(f"checkpoint labels {tuple(labels.shape)} {labels.dtype} do not fit this run")
        with torch.no_grad():
            self.syn_lr.copy_(state["syn_lr"].to(self.device))
            self.labels.copy_(labels.to(self.device))
            for k, v in state["momenta"].items():
                self.momenta[k].copy_(v.to(self.device))

    def describe(self) -> dict[str, Any]:
        """Sizes worth logging: parameters, kept parameters, experts, epochs."""
        return {
            "params": self.layout.total,
            "kept_params": self.layout.total - self.keep_from,
            "experts": len(self.experts),
            "expert_epochs_trained": self.experts.epochs,
            "expert_val_acc": [round(a, 4) for a in self.experts.val_acc],
            "soft_label_init_acc": math.nan if not self.settings.soft_labels
            else float((self.labels.argmax(1) == torch.arange(self.data.num_classes, device=self.device)
                        .repeat_interleave(self.settings.ipc)).float().mean()),
        }
