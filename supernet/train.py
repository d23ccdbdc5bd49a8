"""Training loops: ``fit`` (one model: the base model, a retrained subnet) and shared-weight training with the
sandwich rule (BigNAS / OFA style), resumable; and the estimates long stages print before they start.

Each sandwich step trains the largest subnet on the labels, then the smallest and a few random subnets to match
the largest one's (detached) predictions: in-place distillation. Gradients of all of them accumulate into
the shared weights before one optimiser step, so many subnets become good without retraining.
"""
from __future__ import annotations

import copy
import math
import random
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import default_collate
from tqdm import tqdm

from . import distributed as ddp
from .storage import load_state, write_atomic


def cosine_schedule(opt: torch.optim.Optimizer, total: int, warmup: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup`` steps, then cosine decay to zero at step ``total``."""
    total, warmup = max(1, total), max(1, warmup)
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total))))


def seconds_per_step(step: Callable[[], object], repeats: int = 3) -> float:
    """The median time of ``step()`` over ``repeats`` calls after an untimed first one, with torch's random
    state restored afterwards (a probe must not change what the real run draws)."""
    with torch.random.fork_rng(devices=range(torch.cuda.device_count()) if torch.cuda.is_initialized() else []):
        step()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            step()
            if torch.cuda.is_initialized():
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    return float(np.median(times))


def duration(seconds: float) -> str:
    """'about 13 min' / 'about 40 s': what a long stage announces before it starts."""
    return f"about {seconds / 60:.0f} min" if seconds >= 90 else f"about {max(1, round(seconds))} s"


def announcer(log, what: str) -> Callable[[float, int], None]:
    """``fit``'s ``announce`` that logs ``what: N steps, about T (a few steps timed here)``."""
    return lambda seconds, steps: log(f"{what}: {steps} steps, {duration(seconds)} (a few steps timed here)")


def probe_batch(loader) -> list:
    """The loader's first ``batch_size`` items, collated, without moving any generator the real run draws
    from: the loader's shuffling is not touched, and augmenting transforms draw from torch's generator
    (torchvision) or Python's (timm's crops), both restored."""
    python_random = random.getstate()
    with torch.random.fork_rng(devices=[]):
        batch = default_collate([loader.dataset[i] for i in range(min(loader.batch_size, len(loader.dataset)))])
    random.setstate(python_random)
    return batch


def fit(model: torch.nn.Module, loader, epochs: int, loss_fn, lr: float, weight_decay: float, warmup: float = 0.0,
        clip: float | None = None, amp: bool = False, device="cpu", desc: str = "train", log=None,
        announce: Callable[[float, int], None] | None = None,
        epoch_setup: Callable[[int, torch.nn.Module], object] | None = None) -> list[dict]:
    """The loop that trains one model (the base model, a retrained subnet): AdamW, linear warm-up over the
    ``warmup`` fraction of steps then cosine; ``loss_fn(logits, y, x, *extra)`` for each batch ``(x, y,
    *extra)``; one progress bar over every epoch. ``epoch_setup(epoch, model)`` before each epoch changes what
    the model does in it and returns a name for that (epochs of one name cost the same per step).
    ``announce(seconds, steps)`` first, with the whole training's time estimated from a few steps of a copy in
    each named setup; ``log(row)`` after each epoch. Returns one row per epoch: loss and training-batch top-1."""
    device = torch.device(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    total = epochs * len(loader)
    sched = cosine_schedule(opt, total, int(warmup * total))

    def step(model, opt, batch):
        x, y, *extra = batch
        x, y, extra = x.to(device), y.to(device), [e.to(device) for e in extra]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(x)
            loss = loss_fn(logits, y, x, *extra)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        return logits, y, loss

    setup = epoch_setup or (lambda epoch, model: None)
    if announce is not None:  # timed on a copy, once per named setup
        probe = copy.deepcopy(model)
        popt = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=weight_decay)
        batch = probe_batch(loader)
        seconds, per_step = 0.0, {}
        for epoch in range(epochs):
            name = setup(epoch, probe)
            if name not in per_step:
                per_step[name] = seconds_per_step(lambda: step(probe, popt, batch))
            seconds += per_step[name] * len(loader)
        announce(seconds, total)
        del probe, popt
    history = []
    bar = tqdm(total=total, desc=desc, unit="step", leave=False)
    for epoch in range(epochs):
        setup(epoch, model)
        loss_sum = correct = seen = 0
        for batch in loader:
            logits, y, loss = step(model, opt, batch)
            sched.step()
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
            bar.update()
            bar.set_postfix(epoch=f"{epoch + 1}/{epochs}", loss=f"{loss.item():.3f}")
        # training-batch figures (augmented, patch-dropped): free progress; val is the caller's to measure
        history.append({"epoch": epoch + 1, "loss": loss_sum / seen, "train_top1": correct / seen})
        if log:
            log(history[-1])
    bar.close()
    return history


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Soft KL divergence between the student's and the (detached) teacher's predictions."""
    t = temperature
    return F.kl_div(F.log_softmax(student / t, dim=-1), F.softmax(teacher / t, dim=-1),
                    reduction="batchmean") * t * t


def sandwich_subnets(space, rng: np.random.Generator, n_random: int) -> list[tuple[str, object]]:
    """The subnets a sandwich step distils from the largest: the smallest and ``n_random`` random ones."""
    return [("smallest", space.smallest())] + [(f"random{i}", space.sample(rng)) for i in range(n_random)]


def sandwich_step(sn, x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator, n_random: int = 2,
                  label_smoothing: float = 0.1, subnets=sandwich_subnets) -> dict[str, float]:
    """Forward + backward for the largest subnet on the labels and each of ``subnets(space, rng, n_random)``
    distilled from it (no optimiser step)."""
    logits = sn(x, sn.space.largest())
    loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
    loss.backward()
    teacher = logits.detach()
    losses = {"largest": loss.item()}
    for name, cfg in subnets(sn.space, rng, n_random):
        kd = distill_loss(sn(x, cfg), teacher)
        kd.backward()
        losses[name] = kd.item()
    return losses


def sandwich_update(sn, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator,
                    n_random: int = 2, subnets=sandwich_subnets) -> dict[str, float]:
    """One training step of the shared weights: a sandwich step, gradients averaged over processes, the
    optimiser's step (the phase's time estimate times this)."""
    opt.zero_grad(set_to_none=True)
    losses = sandwich_step(sn, x, y, rng, n_random, subnets=subnets)
    ddp.average_grads(sn.parameters())
    opt.step()
    return losses


def train_supernet(sn, loader, epochs: int, lr: float = 5e-4, weight_decay: float = 0.05, n_random: int = 2,
                   seed: int = 0, checkpoint: str | Path | None = None, device="cpu", log=print,
                   subnets=sandwich_subnets) -> list[dict]:
    """Sandwich-train ``sn`` for ``epochs``; with ``checkpoint``, save after every epoch and resume from it.
    ``subnets``: which subnets each step distils from the largest (``sandwich_subnets``).

    The loader should shuffle with torch's global generator (no ``generator=``): each epoch seeds it.
    Under torchrun each process takes its slice of every batch and gradients are averaged.
    """
    sn.to(device).train()
    opt = torch.optim.AdamW(sn.parameters(), lr=lr, weight_decay=weight_decay)
    sched = cosine_schedule(opt, epochs * len(loader))
    history, start = [], 0
    checkpoint = Path(checkpoint) if checkpoint else None
    state = load_state(checkpoint, device, log, "sandwich training starts over")
    if state is not None:
        sn.load_state_dict(state["supernet"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start, history = int(state["epoch"]), list(state["history"])
        log(f"supernet: resumed from {checkpoint} after epoch {start}/{epochs}")
    for epoch in range(start, epochs):
        # data order and sampled subnets depend on (seed, epoch) only, so a resumed run repeats them exactly
        torch.manual_seed(seed + epoch)
        rng = np.random.default_rng([seed, epoch])
        bar = tqdm(loader, desc=f"supernet epoch {epoch + 1}/{epochs}", leave=False, disable=not ddp.is_main())
        sums: dict[str, float] = {}
        for x, y in bar:
            losses = sandwich_update(sn, opt, ddp.shard(x).to(device), ddp.shard(y).to(device), rng, n_random, subnets)
            sched.step()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + ddp.average(v)
            bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items() if k in ("largest", "smallest")})
        row = {"epoch": epoch + 1, **{k: v / len(loader) for k, v in sums.items()}}
        history.append(row)
        if checkpoint and ddp.is_main():
            done = {"supernet": sn.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "epoch": epoch + 1, "history": history}
            write_atomic(checkpoint, lambda tmp: torch.save(done, tmp))
        ddp.barrier()
        log(f"supernet epoch {epoch + 1}/{epochs}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()
                                                                 if k != "epoch"))
    sn.eval()
    return history

