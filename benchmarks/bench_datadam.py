"""DataDAM iteration speed: our loss vs the reference code's style, in one run.

MNIST, IPC 10, ConvNet (batch norm, as DataDAM distils), batch_real 256 per class. The naive
variant reproduces the reference's habits: forward hooks that clone activations, the loss moved
to the CPU, and a host sync (``loss.item()``) every step. Reports iterations/s, the ratio and
the achieved GFLOP/s (forward + backward FLOPs counted with torch's FlopCounterMode).

    python benchmarks/bench_datadam.py [--device cuda] [--iters 5]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from common import data_root, device_info, sync, write_results
from ddsearch.methods.datadam import DataDAMSettings
from ddsearch.data import load_dataset
import torch.nn.functional as F

from ddsearch.methods.datadam import DataDAM


def reference_attention(activation: torch.Tensor, p: float) -> torch.Tensor:
    return F.normalize(activation.abs().pow(p).sum(dim=1).flatten(1), p=2, dim=1)


class NaiveDataDAM(DataDAM):
    """The reference implementation's style (NCHW, pow, hooks, CPU loss, per-step sync), same maths."""

    def loss(self) -> torch.Tensor:
        s = self.settings
        net = self._fresh_network()
        activations: list[torch.Tensor] = []
        hooks = [
            m.register_forward_hook(lambda _m, _i, out: activations.append(out.clone()))
            for m in net.modules()
            if isinstance(m, nn.ReLU)
        ]
        seed = self.next_seed()
        real_parts, syn_parts = [], []
        for c in range(self.data.num_classes):  # per-class augmentation, as the reference
            real_parts.append(self.dsa(self.data.sample(c, s.batch_real, self.generator), seed=seed))
            syn_parts.append(self.dsa(self.images[c * s.ipc : (c + 1) * s.ipc], seed=seed))
        real_emb = net.embed(torch.cat(real_parts)).detach()
        real_acts = [a.detach() for a in activations]
        activations.clear()
        syn_emb = net.embed(torch.cat(syn_parts))
        syn_acts = list(activations)
        for h in hooks:
            h.remove()
        classes = self.data.num_classes
        loss = torch.tensor(0.0)
        for real_a, syn_a in zip(real_acts[:-1], syn_acts[:-1]):
            r = reference_attention(real_a, s.p).reshape(classes, -1, real_a.shape[2] * real_a.shape[3]).mean(1).cpu()
            y = reference_attention(syn_a, s.p).reshape(classes, -1, syn_a.shape[2] * syn_a.shape[3]).mean(1).cpu()
            loss = loss + s.loss_scale * (r - y).square().sum()
        r = real_emb.reshape(classes, -1, real_emb.shape[1]).mean(1).cpu()
        y = syn_emb.reshape(classes, -1, syn_emb.shape[1]).mean(1).cpu()
        return loss + s.loss_scale * s.lambda_mmd * (r - y).square().sum()

    def step(self) -> torch.Tensor:
        loss = super().step()
        loss.item()  # the reference logs loss.item() every iteration: a host sync
        return loss


def time_iterations(distiller: DataDAM, iters: int, device: torch.device) -> float:
    distiller.step()  # warm-up
    sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        distiller.step()
    sync(device)
    return (time.perf_counter() - start) / iters


def count_flops(distiller: DataDAM) -> float:
    with FlopCounterMode(display=False) as counter:
        distiller.step()
    return float(counter.get_total_flops())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--batch-real", type=int, default=256)
    args = parser.parse_args()
    device = torch.device(args.device)
    data = load_dataset("mnist", root=data_root(), val_size=5000, device=device)
    settings = DataDAMSettings(ipc=10, arch="ConvNetBN", batch_real=args.batch_real)
    ours = DataDAM(settings, data, seed=0)
    naive = NaiveDataDAM(settings.model_copy(update={"channels_last": False}), data, seed=0)
    flops = count_flops(DataDAM(settings, data, seed=1))
    rows = []
    for name, distiller in (("ddsearch", ours), ("reference-style", naive)):
        seconds = time_iterations(distiller, args.iters, device)
        rows.append({"variant": name, "seconds_per_iter": seconds, "iters_per_s": 1 / seconds, "gflops_per_s": flops / seconds / 1e9})
    ratio = rows[1]["seconds_per_iter"] / rows[0]["seconds_per_iter"]
    info = device_info(device)
    payload = {"benchmark": "datadam_speed", "dataset": "mnist", "ipc": 10, "arch": "ConvNetBN",
               "batch_real": args.batch_real, "iters": args.iters, "gflop_per_iter": flops / 1e9,
               "speedup_vs_reference_style": ratio, "rows": rows, **info}
    lines = [
        f"# DataDAM iteration speed ({info['device_name']})",
        "",
        f"MNIST, IPC 10, ConvNetBN, batch_real {args.batch_real}/class, {args.iters} timed iterations; "
        f"{flops / 1e9:.0f} GFLOP per iteration (forward + backward). torch {info['torch']}, {info['date']}.",
        "",
        "| variant | s/iter | iter/s | GFLOP/s |",
        "| --- | --- | --- | --- |",
        *[f"| {r['variant']} | {r['seconds_per_iter']:.3f} | {r['iters_per_s']:.2f} | {r['gflops_per_s']:.1f} |" for r in rows],
        "",
        f"Speed-up over the reference style: **{ratio:.2f}x**.",
    ]
    suffix = "gpu" if device.type == "cuda" else "cpu"
    write_results(f"datadam_speed_{suffix}", payload, "\n".join(lines))


if __name__ == "__main__":
    main()
