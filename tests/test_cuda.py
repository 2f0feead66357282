"""CUDA checks (`pytest -m cuda`): each skips cleanly on a machine without CUDA.

Run by `scripts/gpu_check.sh` on a GPU machine; on CPU they are collected and skipped.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
]


def _waves(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [0.1 * torch.randn(16000, generator=g), 0.1 * torch.randn(11000, generator=g)]


def _tiny_upstream():
    import upstreams

    return upstreams.load("random", arch="tiny").eval()


def test_upstream_forward_cuda_matches_cpu():
    model = _tiny_upstream()
    waves = _waves()
    with torch.no_grad():
        cpu = model(waves)
        model.to("cuda")
        gpu = model(waves)
    assert torch.equal(cpu.lengths.cpu(), gpu.lengths.cpu())
    assert len(cpu.hidden_states) == len(gpu.hidden_states)
    for a, b in zip(cpu.hidden_states, gpu.hidden_states):
        assert b.is_cuda
        torch.testing.assert_close(b.float().cpu(), a.float(), rtol=1e-3, atol=1e-3)
    with torch.no_grad():
        torch.testing.assert_close(model.scene_embeddings(waves).cpu(), _tiny_upstream().scene_embeddings(waves),
                                   rtol=1e-3, atol=1e-3)


def test_upstream_bf16_autocast_cuda_is_close():
    model = _tiny_upstream().to("cuda")
    waves = _waves(1)
    with torch.no_grad():
        ref = model(waves).hidden_states[-1].float()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            low = model(waves).hidden_states[-1].float()
    assert torch.isfinite(low).all()
    # bf16 keeps 8 mantissa bits: compare direction per frame, not exact values
    cos = torch.nn.functional.cosine_similarity(low.flatten(0, 1), ref.flatten(0, 1), dim=-1)
    assert cos.min() > 0.98, float(cos.min())


@pytest.mark.parametrize("preset", ["tiny", "mini"])
def test_m2d_pretraining_step_cuda(preset):
    from upstreams.m2d.masking import random_mask
    from upstreams.m2d.pretrain import M2D_PRESETS, initial_m2d_model
    from upstreams.training.loop import default_param_groups

    cfg = M2D_PRESETS[preset]
    dev = torch.device("cuda")
    model = initial_m2d_model(cfg, log=lambda _m: None).to(dev).train()
    opt = torch.optim.AdamW(default_param_groups(model, cfg.train.weight_decay), lr=1e-3, fused=True)
    gen = torch.Generator(device=dev).manual_seed(0)
    gf, gt = cfg.encoder.grid
    mask = random_mask(4, gf * gt, cfg.mask_ratio, generator=gen)
    batch = {"mel": torch.randn(4, 1, cfg.encoder.n_mels, cfg.encoder.input_frames, device=dev, generator=gen),
             "ids_keep": mask.ids_keep, "ids_mask": mask.ids_mask}
    before = model.encoder.blocks[0].attn.qkv.weight.detach().clone()
    target_before = [p.detach().clone() for p in model.target_parameters()]
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss, stats = model(batch)
    assert loss.is_cuda and torch.isfinite(loss)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    model.update_target(0.9)
    assert not torch.equal(before, model.encoder.blocks[0].attn.qkv.weight)
    assert any(not torch.equal(a, b) for a, b in zip(target_before, model.target_parameters()))
    assert torch.isfinite(stats["target_spread"])


def test_qbe_dtw_cuda_matches_cpu():
    """The whole QbE pipeline (GEMM, min-max, the DTW recursion) on CUDA equals the CPU path."""
    from tasks.qbe.dtw import qbe_scores, raw_match_scores, subsequence_dtw

    g = torch.Generator().manual_seed(0)
    # lengths include a 1-frame query (min_query_frames=1 below), queries longer than documents,
    # a 3-frame query (score 0 under the default 5-frame rule) and 1-frame documents
    q_lengths, d_lengths = (1, 3, 12, 20, 70), (1, 4, 60, 90, 45, 2)
    queries = [torch.randn(n, 32, generator=g, dtype=torch.float64) for n in q_lengths]
    docs = [torch.randn(n, 32, generator=g, dtype=torch.float64) for n in d_lengths]
    # float64 features: equal to rounding, for the default rule and with every query scored
    for min_frames in (5, 1):
        ref = raw_match_scores(queries, docs, dtype=torch.float64, min_query_frames=min_frames)
        out = raw_match_scores([q.cuda() for q in queries], [d.cuda() for d in docs], dtype=torch.float64,
                               min_query_frames=min_frames)  # device: where the features are
        assert out.device.type == "cpu" and out.dtype == torch.float64
        torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)
    # CPU features, CUDA asked for explicitly
    torch.testing.assert_close(raw_match_scores(queries, docs, dtype=torch.float64, device="cuda"),
                               raw_match_scores(queries, docs, dtype=torch.float64), rtol=1e-9, atol=1e-9)
    # float32 (the default compute type) on float32 features: float rounding only
    q32, d32 = [q.float() for q in queries], [d.float() for d in docs]
    ref32 = qbe_scores(q32, d32)
    out32 = qbe_scores([q.cuda() for q in q32], [d.cuda() for d in d32])
    assert (out32 - ref32).abs().max() < 1e-4
    assert torch.equal(out32 > 2.0, ref32 > 2.0) or (ref32 - 2.0).abs().min() < 1e-4
    # the recursion alone on padded CUDA costs
    dist = torch.rand(5, 10, 40, generator=g, dtype=torch.float64)
    qlen, dlen = torch.tensor([10, 1, 7, 10, 3]), torch.tensor([40, 40, 5, 1, 12])
    dtw_gpu = subsequence_dtw(dist.cuda(), qlen, dlen)
    assert dtw_gpu.is_cuda
    torch.testing.assert_close(dtw_gpu.cpu(), subsequence_dtw(dist, qlen, dlen), rtol=1e-12, atol=1e-12)
