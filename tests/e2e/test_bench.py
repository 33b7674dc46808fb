"""The benchmark's arithmetic and table (the timed runs themselves are `python -m bench`)."""

from bench.run import step_flops, table


def test_step_flops_hand_value():
    """1 pair (2 rows) of 1 prompt + 1 response token, hidden 2, MLP 3, 1 layer, 2 heads / 1 KV head,
    vocab 10. Per token: q,o 2·2·2 = 8; k,v 2·2·2·1//2 = 4; MLP 3·2·3 = 18; attention 2·(2/2)·2 = 4
    → 34 × 4 tokens = 136. Head: 2 scored tokens × 2 × 10 = 40. × 2 FLOPs × 3 (fwd+bwd) = 1056."""
    assert step_flops(10, 1, 1, 1, hidden=2, intermediate=3, layers=1, heads=2, kv_heads=1) == 1056


def test_table_ratios_and_skips():
    cfg = dict(vocabs=(512,), prompt_len=4, response_len=4, warmup=1, steps=1)
    results = [
        {"impl": "simpo", "vocab": 512, "s_per_step": 1.0, "tokens_per_s": 64.0, "peak_rss_gb": 0.5},
        {"impl": "trl-cpo-simpo", "vocab": 512, "s_per_step": 4.0, "tokens_per_s": 16.0, "peak_rss_gb": 2.0},
        {"impl": "dpo-cached", "vocab": 512, "skipped": "objective 'dpo' is not registered on this branch"},
    ]
    text = table(results, cfg, peak=1e9, batch=4)
    assert "| 512 | simpo | 1.000 | 64 | 0.50 |" in text
    assert "not registered" in text
    assert "| 512 | 0.25x | 0.25x | - | - |" in text
