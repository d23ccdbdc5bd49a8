"""Why does the bundled base model's first epoch barely move? (issue 11: "find why the first epochs stall")

    python benchmarks/base_stall.py [--epochs 2] [--variants A,P,B,C,E,F] [--seeds 0,1,2]

Trains the bundled recipe's model under a few variants for the first ``--epochs`` epochs of its 12-epoch
schedule and prints, per epoch, the mean training loss and its four quarters (chance with label smoothing
is 2.303), the mean |LayerScale gamma| at each quarter, and val top-1 at the end.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evaluators import evaluate_accuracy  # noqa: E402
from evaluators.data import make_loader  # noqa: E402
from search.config import load_config  # noqa: E402
from search.workload import base_model_config, build_splits, create_model, patch_dropout  # noqa: E402
from supernet.train import cosine_schedule  # noqa: E402

VARIANTS = {"A": ("the recipe", {}), "B": ("lr 5e-4", {"lr": 5e-4}), "C": ("warm-up 0.01", {"warmup": 0.01}),
            "D": ("lr 3e-3", {"lr": 3e-3}), "E": ("LayerScale 1e-2", {"init_values": 1e-2}),
            "F": ("LayerScale 1e-3", {"init_values": 1e-3}),
            "P": ("patch dropout from the first step (the recipe until 2026-12-01)", {"full_patch_epochs": 0}),
            "K": ("batch 32", {"batch_size": 32})}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--variants", default="A,P")
    ap.add_argument("--seeds", default="0")
    args = ap.parse_args()
    for key, seed in [(k, int(s)) for k in args.variants.split(",") for s in args.seeds.split(",")]:
        label, change = VARIANTS[key]
        config = load_config(None)
        config["train"].update(change, seed=seed)
        cfg = config["train"]
        torch.manual_seed(cfg["seed"])
        model = create_model(base_model_config(config))
        splits = build_splits(config["data"], model)
        torch.manual_seed(cfg["seed"])  # as train_classifier does: the product's random stream, step for step
        loader = make_loader(splits["train"], cfg["batch_size"], shuffle=True, seed=cfg["seed"])
        opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
        total = cfg["epochs"] * len(loader)
        sched = cosine_schedule(opt, total, int(cfg["warmup"] * total))
        model.train()
        start, epochs, gammas = time.time(), [], []
        quarter = len(loader) // 4
        for epoch in range(args.epochs):
            patch_dropout(model, epoch, cfg)  # the recipe's own schedule
            losses, weighted, seen = [], 0.0, 0
            for i, (x, y) in enumerate(loader):
                if i % quarter == 0:
                    gammas.append(torch.cat([p.detach().abs().flatten() for n, p in model.named_parameters()
                                             if n.endswith(".gamma")]).mean().item())
                loss = F.cross_entropy(model(x), y, label_smoothing=cfg["label_smoothing"])
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                sched.step()
                losses.append(loss.item())
                weighted, seen = weighted + loss.item() * len(y), seen + len(y)
            q = [sum(losses[j * quarter:(j + 1) * quarter]) / quarter for j in range(4)]
            epochs.append(f"{weighted / seen:.3f} (quarters {', '.join(f'{v:.3f}' for v in q)})")
        model.patch_drop = nn.Identity()
        model.eval()
        print(f"{key} {label}, seed {seed} (torch {torch.__version__}): loss per epoch {'; '.join(epochs)}; mean |gamma| by quarter "
              f"{', '.join(f'{g:.4f}' for g in gammas)}; val {evaluate_accuracy(model, splits['val']):.1%}; "
              f"{time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
