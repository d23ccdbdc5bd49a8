import torch

from conftest import micro_vit
from supernet import Supernet, SubnetConfig
from supernet.importance import Importance, magnitude_importance, reorder


def _random_importance(sn, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = sn.spec
    return Importance(embed=torch.rand(s.embed_dim, generator=g),
                      heads=[torch.rand(s.num_heads, generator=g) for _ in range(s.depth)],
                      mlp=[torch.rand(s.mlp_hidden, generator=g) for _ in range(s.depth)],
                      qk=[torch.rand(s.num_heads, s.head_dim, generator=g) for _ in range(s.depth)],
                      v=[torch.rand(s.num_heads, s.head_dim, generator=g) for _ in range(s.depth)])


def test_reorder_leaves_the_full_model_unchanged():
    for kwargs in ({}, {"init_values": 0.1, "qk_norm": True}):
        sn = Supernet.from_timm(micro_vit(**kwargs)).eval()
        with torch.no_grad():
            sn.conv_offsets.add_(torch.randn_like(sn.conv_offsets))
        x = torch.randn(4, 1, 32, 32)
        # full width through an exit head, a conv block and a token drop: all permutation-invariant too
        shallow = SubnetConfig(48, 2, [3, 3], [192, 192], ["conv", "msa"], [1.0, 0.5], [16, 16], [16, 16])
        weight = sn.vit.blocks[1].attn.qkv.weight.detach().clone()
        with torch.no_grad():
            before, before_exit = sn(x), sn(x, shallow)
            reorder(sn, _random_importance(sn))
            after, after_exit = sn(x), sn(x, shallow)
        assert not torch.equal(weight, sn.vit.blocks[1].attn.qkv.weight)  # the weights did move
        assert torch.allclose(before, after, atol=1e-5)
        assert torch.allclose(before_exit, after_exit, atol=1e-5)


def test_reorder_changes_subnets_and_puts_important_units_first():
    sn = Supernet.from_timm(micro_vit()).eval()
    fc1 = sn.vit.blocks[0].mlp.fc1.weight.detach().clone()
    imp = _random_importance(sn, seed=1)
    x = torch.randn(4, 1, 32, 32)
    small = sn.space.smallest()
    with torch.no_grad():
        before = sn(x, small)
        reorder(sn, imp)
        after = sn(x, small)
    assert not torch.allclose(before, after)  # the smallest subnet now keeps other (the important) units
    top_unit = int(imp.mlp[0].argmax())
    e = torch.argsort(imp.embed, descending=True, stable=True)
    assert torch.equal(sn.vit.blocks[0].mlp.fc1.weight[0], fc1[top_unit, e])


def test_each_head_orders_its_own_query_key_and_value_channels():
    """After reorder, head 0 is the most important head and its first q, k and v rows are that head's most
    important query/key and value channels (each head its own order); the proj columns follow v."""
    sn = Supernet.from_timm(micro_vit()).eval()
    H, hd = sn.spec.num_heads, sn.spec.head_dim
    qkv = sn.vit.blocks[2].attn.qkv.weight.detach().clone().view(3, H, hd, -1)
    proj = sn.vit.blocks[2].attn.proj.weight.detach().clone().view(-1, H, hd)
    imp = _random_importance(sn, seed=2)
    reorder(sn, imp)
    e = torch.argsort(imp.embed, descending=True, stable=True)
    heads = torch.argsort(imp.heads[2], descending=True, stable=True)
    after = sn.vit.blocks[2].attn.qkv.weight.view(3, H, hd, -1)
    for new, old in enumerate(heads.tolist()):
        qk, v = int(imp.qk[2][old].argmax()), int(imp.v[2][old].argmax())
        assert torch.equal(after[0, new, 0], qkv[0, old, qk, e]) and torch.equal(after[1, new, 0], qkv[1, old, qk, e])
        assert torch.equal(after[2, new, 0], qkv[2, old, v, e])
        assert torch.equal(sn.vit.blocks[2].attn.proj.weight.view(-1, H, hd)[:, new, 0], proj[e, old, v])


def test_magnitude_importance_sorts_descending_after_reorder():
    sn = Supernet.from_timm(micro_vit()).eval()
    reorder(sn, magnitude_importance(sn))
    imp = magnitude_importance(sn)
    for scores in [imp.embed] + imp.heads + imp.mlp:
        assert torch.all(scores[:-1] >= scores[1:] - 1e-4)
    for scores in imp.qk + imp.v:  # [heads, width]: within each head
        assert torch.all(scores[:, :-1] >= scores[:, 1:] - 1e-4)
