"""DataDAM: dataset distillation by attention matching (Sajedi et al., ICCV 2023).

Each iteration draws a fresh, frozen network and matches, class by class, the mean spatial
attention maps of real and synthetic images at every block but the last, plus the mean final
embedding (a linear-kernel MMD) weighted by ``lambda_mmd``.

Differences from the reference code, all for speed or reproducibility, none for the maths:
- the networks return their block activations directly (no forward hooks, no clones);
- one Siamese DSA draw per iteration, shared by real and synthetic images of every class;
- the real branch is per-class statistics streamed in cache-sized chunks without autograd
  (:func:`real_statistics`), the synthetic set is one forward pass with autograd;
- the frozen networks compute in the run's precision (bf16 where fast; attention stays fp32);
- the loss stays on the device and randomness comes from a seeded generator.
The loss keeps the reference's x100 scale, so ``lr_img`` (eta_S) means what ``--lr_img`` means there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ddsearch.methods.datadam.settings import DataDAMSettings
from ddsearch.data import RealData
from ddsearch.errors import DDSearchError
from ddsearch.methods.base import Distiller
from ddsearch.models import is_conv_family, seeded_network

# Activations per streamed chunk of the real batch: small enough to stay in a CPU's cache.
REAL_CHUNK_BYTES = 8 << 20
# Under fuse 'auto', compile the chunk kernels when the first block's real activations exceed this.
FUSE_MIN_BYTES = 256 << 20


def abs_pow(x: torch.Tensor, p: float) -> torch.Tensor:
    """|x|^p; the paper's p = 4 (and p = 2) by squaring, which is much cheaper than pow."""
    if p == 4:
        return x.square().square()
    if p == 2:
        return x.square()
    return x.abs().pow(p)


def spatial_attention(activation: torch.Tensor, p: float) -> torch.Tensor:
    """a = sum_c |f_c|^p, flattened and L2-normalised per sample: [N, H*W], always in fp32.

    The power and the channel sum run in fp32 even for a bf16 network: they are cheap next to
    the convolutions and keep the gradient that reaches the synthetic images faithful.
    """
    attention = abs_pow(activation.float(), p).sum(dim=1).flatten(1)
    return F.normalize(attention, p=2, dim=1)


def class_means(features: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-class mean of class-contiguous rows (equal counts per class): [classes, D]."""
    return features.reshape(num_classes, -1, features.shape[-1]).mean(dim=1)


@dataclass
class MatchStatistics:
    """What DataDAM compares per class: mean attention maps of every block but the last, mean embedding."""

    attention: list[torch.Tensor]  # one [classes, H*W] per block but the last
    embedding: torch.Tensor  # [classes, D], fp32


def block_statistics(blocks: list[torch.Tensor], embedding: torch.Tensor, num_classes: int, p: float) -> MatchStatistics:
    """Statistics of a batch whose block activations are all at hand (the synthetic branch)."""
    attention = [class_means(spatial_attention(act, p), num_classes) for act in blocks[:-1]]
    return MatchStatistics(attention, class_means(embedding.float(), num_classes))


def matching_loss(real: MatchStatistics, syn: MatchStatistics, lambda_mmd: float) -> torch.Tensor:
    """Sum over blocks but the last of ||mean_att_real - mean_att_syn||^2 per class, plus
    lambda_mmd * ||mean_emb_real - mean_emb_syn||^2 per class."""
    loss = syn.embedding.new_zeros(())
    for real_att, syn_att in zip(real.attention, syn.attention):
        loss = loss + (real_att - syn_att).square().sum()
    return loss + lambda_mmd * (real.embedding - syn.embedding).square().sum()


def attention_matching_loss(
    real_blocks: list[torch.Tensor],
    real_embedding: torch.Tensor,
    syn_blocks: list[torch.Tensor],
    syn_embedding: torch.Tensor,
    num_classes: int,
    p: float,
    lambda_mmd: float,
) -> torch.Tensor:
    """The DataDAM loss from full block activations of both batches; rows are class-contiguous."""
    real = block_statistics(real_blocks, real_embedding, num_classes, p)
    syn = block_statistics(syn_blocks, syn_embedding, num_classes, p)
    return matching_loss(real, syn, lambda_mmd)


def _chunk_rows(per_row_bytes: int, chunk_bytes: int) -> int:
    return max(1, chunk_bytes // max(per_row_bytes, 1))


def _chunk_moments(part: torch.Tensor, anchor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel sum and sum of squares of ``part - anchor`` in fp32 (one read when compiled)."""
    centred = part.float() - anchor.view(1, -1, 1, 1)
    return centred.sum(dim=(0, 2, 3)), centred.square().sum(dim=(0, 2, 3))


def _batch_norm_affine(
    moments: list[tuple[torch.Tensor, torch.Tensor]], anchor: torch.Tensor, count: int, norm: nn.BatchNorm2d
) -> tuple[torch.Tensor, torch.Tensor]:
    """Train-mode batch norm over the whole batch as one per-channel fp32 ``scale, shift``.

    The chunks' moments are taken around a per-channel anchor (the first image's channel means)
    and summed in fp64, so neither bf16 nor cancellation costs precision.
    """
    total = torch.stack([m[0] for m in moments]).double().sum(0)
    total_sq = torch.stack([m[1] for m in moments]).double().sum(0)
    shifted_mean = total / count
    var = (total_sq / count - shifted_mean.square()).clamp_min_(0).float()
    mean = shifted_mean.float() + anchor
    scale = norm.weight.float() * torch.rsqrt(var + norm.eps)
    shift = norm.bias.float() - mean * scale
    return scale.view(1, -1, 1, 1), shift.view(1, -1, 1, 1)


def _finish_chunk(
    pre: torch.Tensor, scale: torch.Tensor | None, shift: torch.Tensor | None, norm: nn.Module, act: nn.Module,
    p: float, attention: bool, out_dtype: torch.dtype,
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Norm (or the whole-batch batch-norm affine), activation and attention row of one chunk.

    Every step is elementwise or a small reduction, so under ``torch.compile`` the chunk is read
    once and written once, instead of once per operation. Pooling stays outside: oneDNN's pooling
    beats the compiled loop on the CPU.
    """
    normed = norm(pre) if scale is None else torch.addcmul(shift, pre.float(), scale)
    activation = act(normed)
    rows = spatial_attention(activation, p) if attention else None
    return rows, activation.to(out_dtype)


@dataclass(frozen=True)
class ChunkKernels:
    """The per-chunk work of the real branch: eager, or compiled into one fused kernel each."""

    moments: Callable[..., tuple[torch.Tensor, torch.Tensor]] = _chunk_moments
    finish: Callable[..., tuple[torch.Tensor | None, torch.Tensor]] = _finish_chunk


EAGER = ChunkKernels()
_fused: ChunkKernels | None = None


def fused_kernels() -> ChunkKernels:
    """The chunk kernels under ``torch.compile``, built once per process (batch dims are dynamic)."""
    global _fused
    if _fused is None:
        _fused = ChunkKernels(torch.compile(_chunk_moments, dynamic=True), torch.compile(_finish_chunk, dynamic=True))
    return _fused


class Workspace:
    """Large buffers kept across iterations: a fresh 100 MB tensor costs page faults on every step."""

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}

    def get(self, name: str, like: torch.Tensor, rows: int) -> torch.Tensor:
        """A buffer of ``rows`` rows shaped, typed and laid out like ``like`` (contents undefined)."""
        shape = (rows, *like.shape[1:])
        memory = torch.channels_last if like.dim() == 4 and like.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        buffer = self._buffers.get(name)
        if buffer is None or buffer.shape != shape or buffer.dtype != like.dtype or buffer.device != like.device or not buffer.is_contiguous(memory_format=memory):
            buffer = torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=memory)
            self._buffers[name] = buffer
        return buffer


def compiler_available() -> bool:
    """torch.compile on the CPU needs a C++ compiler; without one ddsearch stays eager."""
    import shutil

    return shutil.which("g++") is not None or shutil.which("c++") is not None or shutil.which("clang++") is not None


@torch.no_grad()
def real_statistics(
    net: nn.Module,
    real: torch.Tensor,
    num_classes: int,
    p: float,
    chunk_bytes: int = REAL_CHUNK_BYTES,
    kernels: ChunkKernels = EAGER,
    workspace: Workspace | None = None,
) -> MatchStatistics:
    """The real branch as statistics, not a batch: no autograd and no full-batch activations kept.

    Block by block, the batch is streamed in chunks of about ``chunk_bytes`` of activations, so
    norm, activation, |f|^p, the channel sum and pooling run on data that is still in cache; only
    the pooled output (a quarter of the activation) and the per-sample attention rows are kept.
    A batch-norm block first computes its convolution for the whole batch, taking its moments
    chunk by chunk while they are in cache, so the statistics are exactly the whole real batch's,
    as in the batch formulation. ``kernels`` may be :func:`fused_kernels`.
    """
    workspace = workspace or Workspace()
    x = real
    n = x.shape[0]
    attention: list[torch.Tensor] = []
    blocks = list(net.blocks)
    for index, (conv, norm, act) in enumerate(blocks):
        last = index == len(blocks) - 1
        out_hw = tuple(size + 2 * pad - kernel + 1 for size, pad, kernel in zip(x.shape[-2:], conv.padding, conv.kernel_size))
        chunk = _chunk_rows(conv.out_channels * out_hw[0] * out_hw[1] * 4, chunk_bytes)
        starts = range(0, n, chunk)
        pre = scale = shift = None
        if isinstance(norm, nn.BatchNorm2d) and norm.training:
            moments, anchor = [], None
            for start in starts:
                part = conv(x[start : start + chunk])
                if anchor is None:
                    anchor = part[:1].float().mean(dim=(0, 2, 3))
                    pre = workspace.get(f"pre{index}", part, n)
                moments.append(kernels.moments(part, anchor))
                pre[start : start + chunk] = part
            scale, shift = _batch_norm_affine(moments, anchor, n * out_hw[0] * out_hw[1], norm)
        pooled: torch.Tensor | None = None
        rows = []
        for start in starts:
            part = pre[start : start + chunk] if pre is not None else conv(x[start : start + chunk])
            row, activation = kernels.finish(part, scale, shift, norm, act, p, not last, x.dtype)
            out = net.pool(activation)
            if pooled is None:
                pooled = workspace.get(f"pooled{index}", out, n)
            pooled[start : start + chunk] = out
            if row is not None:
                rows.append(row)
        x = pooled
        if not last:
            attention.append(class_means(torch.cat(rows), num_classes))
    return MatchStatistics(attention, class_means(x.flatten(1).float(), num_classes))


class DataDAM(Distiller):
    """Attention-matching distiller; see the module docstring."""

    method_name = "datadam"
    settings: DataDAMSettings

    def __init__(
        self, settings: DataDAMSettings, data: RealData, seed: int = 0, progress: bool = True, precision: str = "auto"
    ) -> None:
        super().__init__(settings, data, seed, progress, precision)
        self.optimizer = torch.optim.SGD([self.images], lr=settings.lr_img, momentum=settings.momentum)
        self.workspace = Workspace()
        self.kernels = fused_kernels() if self._fuse() else EAGER

    def _fuse(self) -> bool:
        """Compile the real branch's chunk kernels when asked, or under 'auto' when the batch is big.

        Compiling costs seconds once per process (then the disk cache serves it), which only a
        large real batch repays; without a C++ compiler the eager kernels run.
        """
        choice = self.settings.fuse
        if choice == "off":
            return False
        if not compiler_available():
            if choice == "on":
                raise DDSearchError("method.fuse is 'on' but torch.compile has no C++ compiler here; install g++ or use fuse: auto")
            return False
        if choice == "on":
            return True
        data = self.data
        rows = data.num_classes * min(self.settings.batch_real, data.min_class_count())
        probe = seeded_network(self.settings.arch, data.channels, data.num_classes, data.image_size, 0)  # RNG untouched
        width = probe.blocks[0][0].out_channels
        first_block_bytes = rows * data.image_size[0] * data.image_size[1] * width * 4
        return first_block_bytes >= FUSE_MIN_BYTES

    @classmethod
    def validate(cls, settings: DataDAMSettings, data: RealData) -> None:  # type: ignore[override]
        if not is_conv_family(settings.arch):
            raise DDSearchError(
                f"DataDAM needs a convolutional network with blocks to take attention from; "
                f"'{settings.arch}' has none. Use a ConvNet variant such as ConvNetBN"
            )
        super().validate(settings, data)

    def _fresh_network(self) -> torch.nn.Module:
        """A newly initialised, frozen network drawn from the run's generator."""
        data = self.data
        net = seeded_network(self.settings.arch, data.channels, data.num_classes, data.image_size, self.next_seed())
        net = net.to(self.device, self.compute_dtype).train()  # frozen: no fp32 master copy needed
        if self.settings.channels_last:
            net = net.to(memory_format=torch.channels_last)
        for param in net.parameters():
            param.requires_grad_(False)
        return net

    def _real_batch(self) -> torch.Tensor:
        n = self.settings.batch_real
        smallest = self.data.min_class_count()
        n = min(n, smallest)  # classes smaller than batch_real give all their images
        return self.data.sample_classes(n, self.generator)

    def loss(self) -> torch.Tensor:
        """The scaled attention-matching loss for one fresh network and one real batch."""
        s = self.settings
        net = self._fresh_network()
        seed = self.next_seed()
        memory = torch.channels_last if s.channels_last else torch.contiguous_format
        real = self.dsa(self._real_batch(), seed=seed).to(self.compute_dtype).contiguous(memory_format=memory)
        syn = self.dsa(self.images, seed=seed).to(self.compute_dtype).contiguous(memory_format=memory)
        classes = self.data.num_classes
        real_stats = real_statistics(net, real, classes, s.p, kernels=self.kernels, workspace=self.workspace)
        syn_stats = block_statistics(*net.forward_features(syn), classes, s.p)
        return s.loss_scale * matching_loss(real_stats, syn_stats, s.lambda_mmd)

    def step(self) -> torch.Tensor:
        loss = self.loss()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.iteration += 1
        return loss.detach()

    def extra_state(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
