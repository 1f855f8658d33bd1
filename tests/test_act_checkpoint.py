"""MODEL.ACT_CHECKPOINT: checkpointed blocks give the plain model's gradients and BN buffers, and save memory."""
from __future__ import annotations

import pytest
import torch

from video_nl.config import ConfigError, get_default_config, load_config, merge_overrides, stage_flags
from video_nl.models import build_model

torch.set_num_threads(2)


def tiny_cfg(*overrides: str):
    """R18 width 4 I3D with a non-local block in res3 and one in res4, 4×32² clips."""
    cfg = get_default_config()
    merge_overrides(cfg, ["RESNET.DEPTH", "18", "RESNET.WIDTH_PER_GROUP", "4", "MODEL.ARCH", "i3d",
                          "NONLOCAL.LOCATION", "[[], [1], [0], []]",
                          "DATA.NUM_FRAMES", "4", "DATA.TRAIN_CROP_SIZE", "32", "MODEL.NUM_CLASSES", "5",
                          "MODEL.DROPOUT_RATE", "0.0", *overrides])
    return cfg


def twin_models(*overrides: str):
    """The same weights built plain and with ``overrides`` (non-trivial BN γ and context blocks)."""
    torch.manual_seed(0)
    plain = build_model(tiny_cfg())
    for name, p in plain.named_parameters():
        if "bn" in name and name.endswith("weight"):
            torch.nn.init.uniform_(p, 0.5, 1.5)
    other = build_model(tiny_cfg(*overrides))
    other.load_state_dict(plain.state_dict())
    return plain, other


def step(model: torch.nn.Module, x: torch.Tensor, *, bf16: bool = False) -> torch.Tensor:
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(x)
    torch.nn.functional.cross_entropy(logits.float(), torch.tensor([1, 3])).backward()
    return logits.detach()


def saved_tensor_count(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Tensors autograd keeps for backward during one training forward (checkpointed blocks keep only inputs)."""
    count = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal count
        count += 1
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model.train()(x)
    return count


@pytest.mark.parametrize("setting", ["all", "[False, True, True, False]"])
def test_checkpointed_model_has_the_plain_gradients_and_bn_buffers(setting):
    plain, ckpt = twin_models("MODEL.ACT_CHECKPOINT", setting)
    x = torch.randn(2, 3, 4, 32, 32)
    for _ in range(2):  # two steps: running statistics move twice, exactly as the plain model's
        torch.testing.assert_close(step(ckpt, x), step(plain, x), rtol=0, atol=0)
    for (name, a), b in zip(ckpt.named_parameters(), plain.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0, msg=name)
    for (name, a), b in zip(ckpt.named_buffers(), plain.buffers()):
        assert torch.equal(a, b), name  # no second running-stat update from the recomputation
    assert int(ckpt.s3.block0.bn_a.num_batches_tracked) == 2


def test_checkpointing_keeps_fewer_tensors_and_only_where_asked():
    plain, ckpt = twin_models("MODEL.ACT_CHECKPOINT", "all")
    _, partial = twin_models("MODEL.ACT_CHECKPOINT", "[False, False, True, False]")
    x = torch.randn(2, 3, 4, 32, 32)
    kept = {name: saved_tensor_count(m, x) for name, m in (("plain", plain), ("all", ckpt), ("res4", partial))}
    assert kept["all"] < kept["res4"] < kept["plain"], kept
    assert [s.act_checkpoint for s in partial.stages()] == [False, False, True, False]
    with torch.no_grad():  # inference never checkpoints, and gives the same outputs
        torch.testing.assert_close(ckpt.eval()(x), plain.eval()(x), rtol=0, atol=0)


def forward_runs_per_child(model: torch.nn.Module, x: torch.Tensor) -> dict[str, int]:
    """How many times each stage child starts its forward in one training step (forward + backward; a pre-hook,
    as the recomputation stops early once it has rebuilt what backward needs)."""
    runs: dict[str, int] = {}
    hooks = [child.register_forward_pre_hook(lambda *_, key=f"s{k}.{name}": runs.__setitem__(key, runs.get(key, 0) + 1))
             for k, stage in zip((2, 3, 4, 5), model.stages()) for name, child in stage.named_children()]
    step(model, x)
    for h in hooks:
        h.remove()
    return runs


def test_every_checkpointed_child_reruns_except_the_networks_last():
    # Backward starts by rebuilding the last child's activations: checkpointing it would only cost a forward.
    _, ckpt = twin_models("MODEL.ACT_CHECKPOINT", "all")
    _, partial = twin_models("MODEL.ACT_CHECKPOINT", "[False, False, True, False]")
    x = torch.randn(2, 3, 4, 32, 32)
    runs = forward_runs_per_child(ckpt, x)
    last = list(runs)[-1]
    assert last == "s5.block1" and runs[last] == 1
    assert all(n == 2 for key, n in runs.items() if key != last), runs  # NL blocks (s3.nl1, s4.nl0) included
    runs = forward_runs_per_child(partial, x)
    assert {key for key, n in runs.items() if n == 2} == {"s4.block0", "s4.nl0", "s4.block1"}, runs
    assert all(n == 1 for key, n in runs.items() if not key.startswith("s4")), runs


def test_checkpointing_under_bf16_autocast_recomputes_in_bf16():
    # 8×64² and non-zero residual branches: at 4×32² the 1×1 res5 maps make bf16 BN gradients blow up either way.
    sizes = ("DATA.NUM_FRAMES", "8", "DATA.TRAIN_CROP_SIZE", "64", "RESNET.ZERO_INIT_FINAL_BN", "False")
    torch.manual_seed(0)
    plain = build_model(tiny_cfg(*sizes))
    ckpt = build_model(tiny_cfg(*sizes, "MODEL.ACT_CHECKPOINT", "all"))
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 8, 64, 64)
    torch.testing.assert_close(step(ckpt, x, bf16=True), step(plain, x, bf16=True), rtol=0, atol=0)
    scale = max(p.grad.abs().max() for p in plain.parameters())
    for (name, a), b in zip(ckpt.named_parameters(), plain.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=1e-6 * float(scale), msg=name)


def test_act_checkpoint_values_and_clear_errors():
    assert stage_flags("all", key="K") == [True] * 4 and stage_flags("none", key="K") == [False] * 4
    assert stage_flags(True, key="K") == [True] * 4
    cfg = load_config(None, ["MODEL.ACT_CHECKPOINT", "[False, True, True, False]"])
    assert cfg.MODEL.ACT_CHECKPOINT == [False, True, True, False]
    for bad in ("some", "[True, False]", "[1, 0, 0, 1]"):
        with pytest.raises(ConfigError, match=r"MODEL.ACT_CHECKPOINT takes none, all, or 4 booleans"):
            load_config(None, ["MODEL.ACT_CHECKPOINT", bad])
