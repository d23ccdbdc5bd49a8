"""Run by tests/test_phase.py alone and under torchrun: a gate method and a sandwich epoch on fixed data.

Saves the supernet's weights before and after (rank 0) so the test can compare 1 process against 2.
"""
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import micro_vit  # noqa: E402
from supernet import Supernet, distributed as ddp  # noqa: E402
from supernet.gates import UnitCosts, build_method, learn  # noqa: E402
from supernet.train import train_supernet  # noqa: E402

torch.set_num_threads(1)
ddp.init_from_env(torch.device("cpu"))
sn = Supernet.from_timm(micro_vit())
start = {k: v.clone() for k, v in sn.state_dict().items()}
g = torch.Generator().manual_seed(0)
data = TensorDataset(torch.randn(64, 1, 32, 32, generator=g), torch.randint(0, 10, (64,), generator=g))
loader = DataLoader(data, batch_size=32, shuffle=True)  # the global batch; each process takes its half
costs = UnitCosts(total=0.5, embed=1e-3, head=5e-3, qk=2e-4, v=2e-4, mlp=5e-5, block=0.1, conv_saving=0.01)
torch.manual_seed(0)
for name in ("vitslim", "wdpruning"):
    learn(sn, build_method(name, sn, costs), loader, steps=2)
train_supernet(sn, loader, epochs=1, log=lambda *_: None)
if ddp.is_main():
    torch.save({"world": ddp.world(), "start": start, "end": sn.state_dict()}, sys.argv[1])
