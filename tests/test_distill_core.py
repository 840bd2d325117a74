"""Loss, grid matching, adaptors, standardisation, configs: checked against hand computations."""

import math
import textwrap

import pytest
import torch
import torch.nn.functional as F

from distill.adaptors import MLPAdaptor, match_grids
from distill.config import ConfigError, load_config
from distill.features import Features
from distill.losses import distillation_loss, teacher_loss
from distill.standardize import TeacherStandardizer, hadamard


def test_loss_terms_equal_a_hand_computation():
    # summary: two vectors at 90 degrees and one identical pair -> mean(1 - cos) = (1 + 0) / 2
    z_sum = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    y_sum = torch.tensor([[0.0, 3.0], [0.0, 1.0]])
    # patches on a 1x2 grid, D=2: token 1 equal, token 2 opposite -> cos distances 0 and 2
    z_pat = torch.tensor([[[[1.0, 1.0]], [[0.0, 0.0]]]])  # [1, 2, 1, 2]
    y_pat = torch.tensor([[[[2.0, -3.0]], [[0.0, 0.0]]]])
    pred = Features(z_sum[:1].repeat(1, 1), z_pat)
    target = Features(y_sum[:1], y_pat)
    terms = teacher_loss(Features(z_sum, z_pat.repeat(2, 1, 1, 1)), Features(y_sum, y_pat.repeat(2, 1, 1, 1)))
    assert terms["summary_cos"].item() == pytest.approx(0.5)
    assert terms["patch_cos"].item() == pytest.approx(1.0)
    # smooth L1 (beta 1) over elements: |1-2|=1 -> 0.5, |1+3|=4 -> 3.5, zeros -> 0; mean over 4 = 1.0
    assert terms["patch_smooth_l1"].item() == pytest.approx(1.0)
    assert terms["total"].item() == pytest.approx(0.5 + 0.9 * 1.0 + 0.1 * 1.0)
    gamma = teacher_loss(pred, target, patch_weight=3.0)
    plain = teacher_loss(pred, target)
    expected = plain["summary_cos"] + 3.0 * (0.9 * plain["patch_cos"] + 0.1 * plain["patch_smooth_l1"])
    assert gamma["total"].item() == pytest.approx(expected.item())


def test_summary_mask_keeps_only_the_samples_whose_summary_target_applies():
    torch.manual_seed(0)
    pred = Features(torch.randn(4, 6), torch.randn(4, 6, 2, 2))
    target = Features(torch.randn(4, 6), torch.randn(4, 6, 2, 2))
    mask = torch.tensor([True, False, True, False])
    masked = teacher_loss(pred, target, summary_mask=mask)
    kept = teacher_loss(
        Features(pred.summary[mask], pred.patches), Features(target.summary[mask], target.patches)
    )
    assert masked["summary_cos"].item() == pytest.approx(kept["summary_cos"].item())
    assert masked["patch_cos"].item() == pytest.approx(
        teacher_loss(pred, target)["patch_cos"].item()
    )  # patches: all
    none_kept = teacher_loss(pred, target, summary_mask=torch.zeros(4, dtype=torch.bool))
    assert none_kept["summary_cos"].item() == 0.0


def test_loss_sums_over_teachers_and_logs_every_term():
    torch.manual_seed(0)
    outs = {n: Features(torch.randn(2, 4), torch.randn(2, 4, 3, 3)) for n in ("a", "b")}
    tgts = {n: Features(torch.randn(2, 4), torch.randn(2, 4, 3, 3)) for n in ("a", "b")}
    total, logs = distillation_loss(outs, tgts, patch_weights={"b": 2.0})
    a = teacher_loss(outs["a"], tgts["a"])["total"]
    b = teacher_loss(outs["b"], tgts["b"], patch_weight=2.0)["total"]
    assert total.item() == pytest.approx((a + b).item())
    assert {"a/summary_cos", "a/patch_cos", "a/patch_smooth_l1", "a/total", "b/total", "loss"} <= set(logs)


def test_grids_are_matched_bicubically_up_to_the_larger():
    small, large = torch.randn(1, 3, 4, 4), torch.randn(1, 3, 8, 6)
    a, b = match_grids(small, large)
    assert a.shape == b.shape == (1, 3, 8, 6) and b is large
    assert torch.allclose(a, F.interpolate(small, size=(8, 6), mode="bicubic", align_corners=False))
    c, d = match_grids(large, small)  # order does not matter
    assert c is large and torch.allclose(d, a)
    same = torch.randn(1, 2, 5, 5)
    assert match_grids(same, same)[0] is same


def test_grid_matching_enters_the_loss():
    y = torch.randn(1, 4, 8, 8)
    z = F.avg_pool2d(y, 2)  # a 4x4 prediction of an 8x8 target
    terms = teacher_loss(Features(torch.ones(1, 4), z), Features(torch.ones(1, 4), y))
    upsampled = F.interpolate(z, size=(8, 8), mode="bicubic", align_corners=False)
    expected = (1 - F.cosine_similarity(upsampled, y, dim=1)).mean()
    assert terms["patch_cos"].item() == pytest.approx(expected.item(), abs=1e-6)


def test_adaptor_is_linear_norm_gelu_linear_without_bias():
    adaptor = MLPAdaptor(6, 10, 4)
    kinds = [type(m).__name__ for m in adaptor]
    assert kinds == ["Linear", "LayerNorm", "GELU", "Linear"]
    assert adaptor[0].bias is None and adaptor[3].bias is None


@pytest.mark.parametrize("method", ["standard", "phi-s"])
def test_standardised_targets_have_zero_mean_unit_variance_on_estimation_data(method):
    torch.manual_seed(0)
    mixing = torch.randn(16, 16)
    batches = [
        Features(torch.randn(32, 12) * 5 + 3, (torch.randn(4, 5, 5, 16) @ mixing).permute(0, 3, 1, 2) + 7)
        for _ in range(4)
    ]
    std = TeacherStandardizer(12, 16, method)
    std.fit(batches)
    out = [std(b) for b in batches]
    summary = torch.cat([o.summary for o in out])
    patches = torch.cat([o.patches.permute(0, 2, 3, 1).reshape(-1, 16) for o in out])
    for rows in (summary, patches):
        assert rows.mean(0).abs().max() < 1e-4
        assert (rows.var(0, unbiased=False) - 1).abs().max() < 1e-3 * (1 if method == "standard" else 5)
    if method == "phi-s":  # one isotropic scale after the rotation: total variance is preserved up to it
        assert std.patches.scale.shape == (16, 16)


def test_hadamard_orders_and_refusal():
    for order in (1, 2, 12, 20, 32, 384, 1280):
        h = hadamard(order)
        assert torch.allclose(h @ h.T, torch.eye(order, dtype=h.dtype), atol=1e-9)
        assert torch.allclose(h.abs(), torch.full_like(h, 1 / math.sqrt(order)))
    with pytest.raises(ValueError, match="no Hadamard matrix of order 6"):
        hadamard(6)


TOY = "configs/toy.yaml"


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_shipped_configs_load():
    for name in ("toy", "small", "paper"):
        config = load_config(f"configs/{name}.yaml")
        assert set(config.stages) == {"proxy", "student", "multires", "direct"}
    config = load_config(TOY, ["stages.proxy.steps=7", "loss.alpha=0.5", "data.source=scenes"])
    assert config.stages["proxy"].steps == 7 and config.loss.alpha == 0.5 and config.data.source == "scenes"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["stages.proxy.stepz=3"], "unknown config key 'stages.proxy.stepz'"),
        (["loss.alpah=1"], "unknown config key 'loss.alpah'"),
        (["stages.proxy.steps=many"], "config key 'stages.proxy.steps' must be int, got 'many'"),
        (["stages.proxy.steps=-1"], "config key 'stages.proxy.steps' must be positive"),
        (["norm.method=zca"], "config key 'norm.method' must be one of standard, phi-s"),
        (["stages.warp={steps: 1, batch_size: 1, lr: 1}"], "unknown stage 'stages.warp'"),
        (["train.grad_clip=[1]"], "config key 'train.grad_clip' must be float"),
        (["nonsense"], "override 'nonsense' must look like key.sub=value"),
    ],
)
def test_bad_keys_and_values_are_one_line_errors(overrides, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_config(TOY, overrides)
    assert "\n" not in str(info.value)


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config(tmp_path / "none.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "teachers: [\n"))
    with pytest.raises(ConfigError, match="missing config key 'proxy'"):
        load_config(write(tmp_path, "teachers: [{name: text}]\nstages: {}\n"))


def test_paper_config_builds_on_meta_with_published_sizes():
    import timm

    from distill.models import DistilledModel

    config = load_config("configs/paper.yaml")
    with torch.device("meta"):
        dims = {}
        for spec in config.teachers:
            from distill.backbones import TIMM_ALIASES

            teacher = timm.create_model(TIMM_ALIASES[spec.name].split(".")[0], num_classes=0)
            dims[spec.name] = (teacher.num_features, teacher.num_features)
        proxy = DistilledModel(config.proxy, dims)
        student = DistilledModel(config.student, dims)
    backbone = sum(p.numel() for p in proxy.backbone.parameters())
    assert 1.8e9 <= backbone <= 2.0e9
    assert proxy.backbone.num_prefix_tokens == 5  # CLS + 4 registers
    assert 85e6 <= sum(p.numel() for p in student.backbone.parameters()) <= 87e6  # ViT-B/16
    assert dims == {"pe-core-g": (1536, 1536), "pe-lang-g": (1536, 1536), "dinov3-h+": (1280, 1280)}
