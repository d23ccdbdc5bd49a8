"""FLOPs / params: checked against a count done by hand from the ViT's shapes."""

from __future__ import annotations

import pytest
from timm.models.vision_transformer import VisionTransformer

from evaluators.cost import Cost, count_cost

IMG, PATCH, CHANS, CLASSES, DIM, DEPTH, HEADS, MLP = 32, 8, 1, 10, 48, 2, 3, 2


def tiny_vit() -> VisionTransformer:
    return VisionTransformer(
        img_size=IMG, patch_size=PATCH, in_chans=CHANS, num_classes=CLASSES,
        embed_dim=DIM, depth=DEPTH, num_heads=HEADS, mlp_ratio=MLP,
    )


def hand_count() -> int:
    """Multiply-adds of a batch-1 forward: one flop per multiply-add."""
    patches = (IMG // PATCH) ** 2
    tokens = patches + 1  # + class token
    hidden = DIM * MLP
    patch_embed = patches * (CHANS * PATCH * PATCH) * DIM
    per_block = (
        tokens * DIM * 3 * DIM      # qkv
        + tokens * tokens * DIM     # q @ k^T, summed over heads (heads * head_dim = DIM)
        + tokens * tokens * DIM     # attn @ v
        + tokens * DIM * DIM        # proj
        + tokens * DIM * hidden     # fc1
        + tokens * hidden * DIM     # fc2
    )
    head = DIM * CLASSES  # class-token pooling: only one token reaches the head
    return patch_embed + DEPTH * per_block + head


def test_params_are_parameter_elements():
    vit = tiny_vit()
    assert count_cost(vit, (CHANS, IMG, IMG)).params == sum(p.numel() for p in vit.parameters())


def test_flops_match_hand_count_including_fused_attention():
    vit = tiny_vit()
    assert all(blk.attn.fused_attn for blk in vit.blocks)  # the sdpa path is what we test
    cost = count_cost(vit, (CHANS, IMG, IMG))
    assert cost.flops == hand_count()
    assert cost.gflops == pytest.approx(hand_count() / 1e9)
    assert cost.mparams == pytest.approx(cost.params / 1e6)


def test_unfused_attention_counts_the_same():
    vit = tiny_vit()
    for blk in vit.blocks:
        blk.attn.fused_attn = False  # explicit q @ k^T, softmax, attn @ v
    assert count_cost(vit, (CHANS, IMG, IMG)).flops == hand_count()


def test_training_flags_restored():
    vit = tiny_vit().train()
    vit.head.eval()
    before = [m.training for m in vit.modules()]
    count_cost(vit, (CHANS, IMG, IMG))
    assert [m.training for m in vit.modules()] == before


def test_cost_is_frozen():
    with pytest.raises(AttributeError):
        Cost(flops=1, params=2).flops = 3  # type: ignore[misc]
