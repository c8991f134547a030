"""TimeSformer / CR-ViT: shapes, the divided space-time block, and CR-ViT's token and memory rules."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from crt_repro.models.vit import ViTConfig, VideoViT

B, T, D = 2, 4, 32


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matrices: a second OpenMP thread on a shared 2-core machine costs 1000x here."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny(**kw) -> VideoViT:
    torch.manual_seed(0)
    cfg = dict(image_size=16, patch_size=8, n_frames=T, n_classes=5, d_model=D, n_layer=2,
               n_head=4, drop_path=0.0)
    cfg.update(kw)
    model = VideoViT(ViTConfig(**cfg)).eval()
    for name, p in model.named_parameters():  # larger than the 0.02 init, and temporal_fc past
        if p.dim() >= 2 and not name.startswith("memory_rnn."):  # block 0 not zero, so that
            torch.nn.init.normal_(p, std=0.2)                    # every path shows an effect
    return model


def video(frames: int = T) -> torch.Tensor:
    return torch.randn(B, frames, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def test_shapes_and_head_width():
    tsf, crv = tiny(), tiny(recurrent=True)
    assert tsf.head.in_features == D and crv.head.in_features == 2 * D
    assert tsf.memory_rnn is None and crv.memory_rnn is not None
    for model in (tsf, crv):
        logits, loss = model(video(), torch.tensor([0, 3]))
        assert logits.shape == (B, 5) and loss.dim() == 0
    assert len(tsf.forward_iterations(video())) == 1
    assert len(crv.forward_iterations(video())) == 2


def reference_block(blk, x: torch.Tensor, T: int) -> torch.Tensor:
    """TimeSformer's divided block on its flat token layout [B, 1 + N*T, d], patch-major."""
    Bx, L, d = x.shape
    N = (L - 1) // T
    xt = x[:, 1:] + blk.temporal_fc(blk.temporal_attn(blk.temporal_norm1(
        x[:, 1:].reshape(Bx * N, T, d))).reshape(Bx, N * T, d))
    cls0 = x[:, :1]
    xs = xt.reshape(Bx, N, T, d).transpose(1, 2).reshape(Bx * T, N, d)
    xs = torch.cat([cls0.repeat(1, T, 1).reshape(Bx * T, 1, d), xs], dim=1)
    rs = blk.attn(blk.norm1(xs))
    cls = rs[:, 0].reshape(Bx, T, d).mean(1, keepdim=True)
    res = rs[:, 1:].reshape(Bx, T, N, d).transpose(1, 2).reshape(Bx, N * T, d)
    x = torch.cat([cls0, xt], 1) + torch.cat([cls, res], 1)
    return x + blk.mlp(blk.norm2(x))


def test_block_matches_timesformer_flat_layout():
    blk = tiny().blocks[1]
    N = 4
    x = torch.randn(B, 1 + N * T, D)
    want = reference_block(blk, x, T)
    cls, patches = blk(x[:, 0], x[:, 1:].reshape(B, N, T, D))
    got = torch.cat([cls.unsqueeze(1), patches.reshape(B, N * T, D)], 1)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_memory_token_only_in_time_attention():
    shapes: dict[str, list] = {"time": [], "space": []}
    model = tiny(recurrent=True)
    for block in model.blocks:
        block.temporal_attn.register_forward_hook(lambda m, a, o: shapes["time"].append(a[0].shape))
        block.attn.register_forward_hook(lambda m, a, o: shapes["space"].append(a[0].shape))
    model(video())
    N = 4
    assert set(shapes["time"]) == {torch.Size([B * N, T + 1, D])}   # memory + T frames
    assert set(shapes["space"]) == {torch.Size([B * T, N + 1, D])}  # cls + N patches, no memory


def test_classifier_input_and_class_token_rules():
    model = tiny(recurrent=True)
    head_in, block0_cls = [], []
    model.head.register_forward_hook(lambda m, a, o: head_in.append(a[0]))
    model.blocks[0].register_forward_pre_hook(lambda m, a: block0_cls.append(a[0]))
    with torch.no_grad():
        model(video())
    it1, it2 = head_in
    cls1 = it1[:, D:]
    torch.testing.assert_close(it1[:, :D], cls1)           # iteration 1: [cls, cls]
    torch.testing.assert_close(it2[:, :D], cls1)           # iteration 2: [prev_cls, cls]
    assert not torch.allclose(it2[:, D:], cls1)
    learned = (model.cls_token + model.pos_embed[:, :1]).view(1, D)
    torch.testing.assert_close(block0_cls[0], learned.expand(B, D))
    torch.testing.assert_close(block0_cls[1], learned + cls1)  # iteration 2 adds prev output cls


def test_memory_changes_iteration_two_logits():
    model = tiny(recurrent=True)
    x = video()
    with torch.no_grad():
        logits = model.forward_iterations(x)
        patches = model.embed(x)
        zero = model.initial_memory(x)
        _, cls1, out1 = model.step(patches, zero)
        memory = model.update_memory(out1, zero)
        assert memory.shape == (B, D) and memory.abs().sum() > 0
        with_memory, _, _ = model.step(patches, memory, cls1)
        without, _, _ = model.step(patches, zero, cls1)
    torch.testing.assert_close(with_memory, logits[1])
    assert not torch.allclose(with_memory, without, atol=1e-4)


@pytest.mark.parametrize("scope,rnn", [("clip", "gru"), ("patch", "gru"), ("clip", "ncgru")])
def test_iteration_two_loss_reaches_iteration_one_through_memory(scope, rnn):
    model = tiny(recurrent=True, memory_scope=scope, rnn=rnn)
    x, y = video(), torch.tensor([1, 2])
    patches = model.embed(x)
    zero = model.initial_memory(x)
    _, cls1, out1 = model.step(patches, zero)
    out1.retain_grad()
    memory = model.update_memory(out1, zero)
    logits2, _, _ = model.step(patches, memory, cls1.detach())  # memory is the only path
    F.cross_entropy(logits2, y).backward()
    assert out1.grad is not None and out1.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.memory_rnn.parameters())


def test_loss_iterations_flag():
    x, y = video(), torch.tensor([1, 2])
    for which in ("all", "last"):
        model = tiny(recurrent=True, loss_iterations=which)
        with torch.no_grad():
            l1, l2 = (F.cross_entropy(lg, y) for lg in model.forward_iterations(x))
            logits, loss = model(x, y)
        torch.testing.assert_close(loss, (l1 + l2) / 2 if which == "all" else l2)


def test_split_iterations_see_their_own_frames():
    model = tiny(recurrent=True, iteration_frames="split")
    x = video(2 * T)
    y = x.clone()
    y[:, T:] = torch.randn_like(y[:, T:])
    with torch.no_grad():
        a, b = model.forward_iterations(x), model.forward_iterations(y)
    torch.testing.assert_close(a[0], b[0])          # iteration 1 sees only frames [0, T)
    assert not torch.allclose(a[1], b[1])


def test_wrong_input_size_is_an_error():
    with pytest.raises(ValueError, match="expected 4 frames"):
        tiny()(video(T + 1))
