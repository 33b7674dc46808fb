"""The benchmark's arithmetic and table (the timed runs themselves are `python -m bench`)."""

from bench.run import step_flops


def test_step_flops_hand_value():
    """1 pair (2 rows) of 1 prompt + 1 response token, hidden 2, MLP 3, 1 layer, 2 heads / 1 KV head,
    vocab 10. Per token: q,o 2·2·2 = 8; k,v 2·2·2·1//2 = 4; MLP 3·2·3 = 18; attention 2·(2/2)·2 = 4
    → 34 × 4 tokens = 136. Head: 2 scored tokens × 2 × 10 = 40. × 2 FLOPs × 3 (fwd+bwd) = 1056."""
    assert step_flops(10, 1, 1, 1, hidden=2, intermediate=3, layers=1, heads=2, kv_heads=1) == 1056
