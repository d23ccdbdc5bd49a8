import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from conftest import micro_vit
from supernet import Supernet
from supernet.train import distill_loss, train_supernet


def _loader():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 1, 32, 32, generator=g), torch.randint(0, 10, (64,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True)


def test_distill_loss_is_zero_for_equal_logits_and_positive_otherwise():
    a = torch.randn(4, 10)
    assert distill_loss(a, a).abs() < 1e-6 and distill_loss(a, a.flip(1)) > 0


def test_sandwich_training_trains_every_axis_and_lowers_the_loss(tmp_path):
    sn = Supernet.from_timm(micro_vit())
    before = sn.vit.blocks[0].mlp.fc1.weight.detach().clone()
    exit_before = sn.exits["1"]["head"].weight.detach().clone()
    history = train_supernet(sn, _loader(), epochs=3, lr=2e-3, log=lambda *_: None)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["largest"] < history[0]["largest"]
    assert not torch.equal(before, sn.vit.blocks[0].mlp.fc1.weight)
    assert not torch.equal(exit_before, sn.exits["1"]["head"].weight)  # the smallest subnet's exit head learns


def test_sandwich_training_distils_the_subnets_it_is_given():
    default = train_supernet(Supernet.from_timm(micro_vit()), _loader(), epochs=1, log=lambda *_: None)
    assert set(default[0]) == {"epoch", "largest", "smallest", "random0", "random1"}
    drawn = []

    def smallest_only(space, rng, n_random):
        drawn.append(n_random)
        return [("narrow", space.smallest())]

    history = train_supernet(Supernet.from_timm(micro_vit()), _loader(), epochs=1, n_random=3, log=lambda *_: None,
                             subnets=smallest_only)
    assert set(history[0]) == {"epoch", "largest", "narrow"} and drawn == [3] * len(_loader())


def test_resumed_training_equals_uninterrupted_training(tmp_path):
    straight = Supernet.from_timm(micro_vit())
    train_supernet(straight, _loader(), epochs=2, log=lambda *_: None)
    ckpt = tmp_path / "supernet.pt"

    def interrupt(line):
        raise KeyboardInterrupt(line)  # the user presses Ctrl-C right after epoch 1 is saved

    with pytest.raises(KeyboardInterrupt):
        train_supernet(Supernet.from_timm(micro_vit()), _loader(), epochs=2, checkpoint=ckpt, log=interrupt)
    logs = []
    resumed2 = Supernet.from_timm(micro_vit())
    history = train_supernet(resumed2, _loader(), epochs=2, checkpoint=ckpt, log=logs.append)
    assert any("resumed" in line and "after epoch 1/2" in line for line in logs)
    assert len(history) == 2
    for a, b in zip(straight.state_dict().values(), resumed2.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6)


def test_cosine_schedule_warms_up_linearly_then_decays_to_zero():
    from supernet.train import cosine_schedule

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = cosine_schedule(opt, total=100, warmup=10)
    lrs = []
    for _ in range(101):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(math.cos(math.pi * 9 / 100) * 0.5 + 0.5)
    assert max(lrs) == lrs[9] and lrs[50] == pytest.approx(0.5) and lrs[100] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))  # never rises after the warm-up


def test_finetune_asks_the_teacher_once_per_image_on_fixed_data_and_learns_the_same():
    import copy

    from search.retrain import finetune

    torch.manual_seed(0)
    data = TensorDataset(torch.randn(40, 1, 32, 32), torch.randint(0, 10, (40,)))

    class Listed(torch.utils.data.Dataset):  # the same images, as a dataset that could augment
        def __len__(self):
            return len(data)

        def __getitem__(self, i):
            return data[i]

    teacher, student = micro_vit(1, num_classes=10), micro_vit(2, num_classes=10)
    seen = []
    teacher.register_forward_hook(lambda m, args, out: seen.append(len(args[0])))
    cfg = {"seed": 0, "batch_size": 16, "lr": 1e-3, "epochs": 2, "kd_weight": 0.5, "temperature": 2.0}
    fixed, listed = copy.deepcopy(student), copy.deepcopy(student)
    h_fixed = finetune(fixed, teacher, data, cfg, "cpu")
    assert sum(seen) == 40  # once per image, not once per image and epoch
    seen.clear()
    h_listed = finetune(listed, teacher, Listed(), cfg, "cpu")
    assert sum(seen) == 80 + 4 * 16  # every epoch, plus the time estimate's probe (4 steps of one batch)
    assert [h["loss"] for h in h_fixed] == pytest.approx([h["loss"] for h in h_listed], rel=1e-4)
    for a, b in zip(fixed.parameters(), listed.parameters()):
        assert torch.allclose(a, b, atol=1e-4)


def test_the_teachers_logits_are_cached_by_its_weights_and_the_images():
    from search.retrain import teacher_outputs

    torch.manual_seed(1)
    data = TensorDataset(torch.randn(12, 1, 32, 32), torch.randint(0, 10, (12,)))
    teacher, calls = micro_vit(1, num_classes=10).eval(), []
    teacher.register_forward_hook(lambda m, args, out: calls.append(len(args[0])))
    first = teacher_outputs(teacher, data, "cpu")
    assert sum(calls) == 12 and torch.allclose(first, teacher(data.tensors[0]).detach(), atol=1e-5)
    calls.clear()
    assert torch.equal(teacher_outputs(teacher, data, "cpu"), first) and not calls  # read back, not recomputed
    with torch.no_grad():
        teacher.head.weight.add_(0.1)  # another teacher: its own logits
    assert not torch.allclose(teacher_outputs(teacher, data, "cpu"), first) and sum(calls) == 12
    calls.clear()
    other = TensorDataset(data.tensors[0] + 1, data.tensors[1])  # other images: their own logits
    teacher_outputs(teacher, other, "cpu")
    assert sum(calls) == 12


def test_the_time_estimate_before_training_changes_nothing_the_training_draws():
    import random

    from supernet.train import fit

    class Augmenting(torch.utils.data.Dataset):  # draws from torch's and Python's generators, as crops do
        def __len__(self):
            return 48

        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            x = torch.randn(1, 32, 32, generator=g) + torch.rand(()) + random.random()
            return x, i % 10

    def train(announce):
        torch.manual_seed(0)
        random.seed(0)
        model = micro_vit(3, num_classes=10)
        loader = torch.utils.data.DataLoader(Augmenting(), batch_size=16, shuffle=True,
                                             generator=torch.Generator().manual_seed(0))
        history = fit(model, loader, 2, lambda logits, y, x: torch.nn.functional.cross_entropy(logits, y), 1e-3,
                      0.05, announce=announce)
        return model, history

    calls = []
    quiet, _ = train(None)
    announced, _ = train(lambda seconds, steps: calls.append((seconds, steps)))
    assert len(calls) == 1 and calls[0][1] == 6 and calls[0][0] > 0  # 2 epochs × 3 batches, before training
    for a, b in zip(quiet.parameters(), announced.parameters()):
        assert torch.equal(a, b)
