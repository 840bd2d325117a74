"""Inside an encoder: features of any layer, CLS attention maps, native aspect ratio, and smooth display."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from torch import Tensor, nn

from distill.config import ModelConfig
from distill.data.images import native_size, native_view, square_view
from distill.distilled_teacher import DistilledTeacher
from distill.features import Features
from distill.models import DistilledModel
from distill.teachers.base import Teacher
from workbench.eval.encoders import Encoder
from workbench.eval.inside import attention_module, kept_attention
from workbench.explore.attention_view import attention_maps
from workbench.explore.encoder_cache import EncoderCache
from workbench.explore.explorer import Explorer
from workbench.viz.upsample import upsample

TINY = {"embed_dim": 32, "depth": 2, "num_heads": 2}
ARCHS = {
    "rope-vit": ModelConfig("vit_small_patch16_dinov3", TINY),  # RoPE, CLS + 4 registers
    "vit": ModelConfig("vit_tiny_patch16_224", TINY),  # learned absolute position embedding
    "convnext": ModelConfig("convnext_atto", {"dims": (8, 16, 32, 64), "depths": (1, 1, 1, 1)}),
}
WIDE = (90, 160)  # a 16:9 image


def tiny_encoder(arch: str, resolution: int = 64) -> Encoder:
    """A tiny distilled backbone, its weights shaken off timm's near-identity init (layer scale 1e-5)."""
    torch.manual_seed(0)
    model = DistilledModel(ARCHS[arch], {}).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    return Encoder(arch, "student", DistilledTeacher(model, resolution))


@pytest.fixture(scope="module")
def encoders() -> dict[str, Encoder]:
    return {arch: tiny_encoder(arch) for arch in ARCHS}


@pytest.fixture(scope="module")
def images() -> Tensor:
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def normalised(model: nn.Module, images: Tensor) -> Tensor:
    """Images standardised by hand with a timm model's pretrained mean and std."""
    mean, std = (torch.tensor(model.pretrained_cfg[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    return (images - mean) / std


class ConvExpert(Teacher):
    """A tiny frozen conv 'expert' (no timm model inside): patches [B, 6, H/4, W/4]."""

    def __init__(self) -> None:
        super().__init__((0.5,) * 3, (0.25,) * 3, resolution=32, size_multiple=4)
        self.conv = nn.Conv2d(3, 6, 4, stride=4)
        self.summary_dim, self.patch_dim, self.patch_stride = 6, 6, 4
        self.freeze()

    def encode(self, x: Tensor) -> Features:
        patches = self.conv(x)
        return Features(patches.mean((2, 3)), patches)


# ---------------------------------------------------------------- layers


@pytest.mark.parametrize("arch", list(ARCHS))
def test_layers_are_timms_intermediates_and_the_last_is_the_encoders_own_patches(encoders, images, arch):
    encoder = encoders[arch]
    model = encoder.timm_model
    assert encoder.layers() == (4 if arch == "convnext" else TINY["depth"])
    first, last = encoder.inside(images, 0).patches, encoder.inside(images, encoder.layers() - 1).patches
    expected = model.forward_intermediates(
        normalised(model, images), indices=[0, encoder.layers() - 1], norm=True, intermediates_only=True
    )
    torch.testing.assert_close([first, last], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(encoder.inside(images).patches, encoder(images).patches, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(encoder.inside(images, -1).patches, last)
    if arch != "convnext":  # blocks keep their width, so layers can be compared
        assert (first - last).abs().max() > 1e-2


def test_a_layer_out_of_range_and_an_experts_inner_layer_are_refused_in_one_line(encoders, images):
    with pytest.raises(ValueError, match=r"^layer 2 is out of range: this encoder shows layers 0 to 1$"):
        encoders["vit"].inside(images, 2)
    expert = Encoder("conv", "expert", ConvExpert())
    assert expert.layers() == 1
    torch.testing.assert_close(expert.inside(images).patches, expert(images).patches)
    with pytest.raises(ValueError, match="shows only its output layer"):
        expert.inside(images, 1)


# ---------------------------------------------------------------- attention


def block_input_and_output(block: nn.Module, model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """What a block's attention module takes and gives in an ordinary (fused) forward pass."""
    seen = {}
    handle = block.attn.register_forward_hook(lambda m, args, out: seen.update(x=args[0], y=out))
    model.forward_features(x)
    handle.remove()
    return seen["x"], seen["y"]


def test_vit_cls_attention_is_the_softmax_row_of_q_k_by_hand(encoders, images):
    encoder = encoders["vit"]
    model = encoder.timm_model
    attn = model.blocks[0].attn
    tokens, _ = block_input_and_output(model.blocks[0], model, normalised(model, images))
    batch, count, _ = tokens.shape
    q, k, _ = attn.qkv(tokens).reshape(batch, count, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    row = ((q @ k.transpose(-2, -1)) * attn.head_dim**-0.5).softmax(-1)[:, :, 0]  # CLS -> all tokens
    shown = encoder.inside(images, 0).attention
    assert shown.shape == (2, TINY["num_heads"], 4, 4)
    torch.testing.assert_close(shown.flatten(2), row[:, :, model.num_prefix_tokens :], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(shown.sum((-2, -1)) + row[:, :, 0], torch.ones(2, TINY["num_heads"]))
    assert attn.fused_attn == timm.layers.use_fused_attn()  # the fused path is restored


def test_rope_vit_attention_weights_are_those_its_fused_block_applies(encoders, images):
    """The kept softmax, times the values, reproduces the block's fused (SDPA) output: RoPE and the
    registers are in the weights as the model used them."""
    encoder = encoders["rope-vit"]
    model = encoder.timm_model
    attn = attention_module(model, 1)
    x = encoder.backbone.model.normalise(encoder.prepare(images))
    tokens, fused_out = block_input_and_output(model.blocks[1], model, x)
    with kept_attention(attn) as kept:
        model.forward_features(x)
    (weights,) = kept
    assert attn.fused_attn  # restored
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))
    assert attn.q_bias is None  # this arch's qkv has no bias
    batch, count, width = tokens.shape
    v = attn.qkv(tokens).reshape(batch, count, 3, attn.num_heads, -1)[:, :, 2]
    mixed = (weights @ v.transpose(1, 2)).transpose(1, 2).reshape(batch, count, width)
    torch.testing.assert_close(attn.proj(attn.norm(mixed)), fused_out, atol=1e-5, rtol=1e-4)
    prefix = model.num_prefix_tokens
    assert prefix == 5
    shown = encoder.inside(images).attention
    torch.testing.assert_close(shown.flatten(2), weights[:, :, 0, prefix:], atol=1e-6, rtol=1e-5)


def test_models_without_a_cls_token_give_no_attention(encoders, images):
    assert encoders["convnext"].inside(images).attention is None


# ---------------------------------------------------------------- native aspect ratio


def test_native_size_keeps_the_aspect_and_the_area_in_whole_patches():
    for height, width in [WIDE, (300, 200), (64, 64), (10, 1000)]:
        h, w = native_size(height, width, 224, 16)
        assert h % 16 == 0 and w % 16 == 0 and min(h, w) >= 16
        assert abs(h * w - 224**2) / 224**2 < 0.25 or min(h, w) == 16
        assert abs(h / w - height / width) <= 16 / min(h, w) * (height / width) + 1e-9
    view = native_view(torch.rand(3, *WIDE), 64, 16)
    assert view.shape == (3, *native_size(*WIDE, 64, 16)) and view.min() >= 0 and view.max() <= 1


@pytest.mark.parametrize("arch", ["rope-vit", "vit", "convnext"])
def test_a_wide_image_keeps_its_aspect_as_an_h_by_w_grid(encoders, arch):
    encoder = encoders[arch]
    wide = torch.rand(1, 3, *WIDE, generator=torch.Generator().manual_seed(1))
    stride = encoder.backbone.size_multiple
    expected = tuple(side // encoder.patch_stride for side in native_size(*WIDE, 64, stride))
    kept = encoder(wide, keep_aspect=True).patches
    assert kept.shape[-2:] == expected and expected[0] < expected[1]
    assert encoder(wide).patches.shape[-2] == encoder(wide).patches.shape[-1]  # squashed to a square
    inside = encoder.inside(wide, keep_aspect=True)
    assert inside.patches.shape[-2:] == expected
    if arch != "convnext":
        assert inside.attention.shape[-2:] == expected
        assert encoder.inside(wide, 0, keep_aspect=True).patches.shape[-2:] == expected
    assert encoder.resolution == 64  # restored after the native-size pass


def test_an_offline_expert_keeps_the_aspect_too():
    expert = Encoder("conv", "expert", ConvExpert())
    grid = expert(torch.rand(1, 3, *WIDE), keep_aspect=True).patches.shape[-2:]
    assert tuple(grid) == tuple(side // 4 for side in native_size(*WIDE, 32, 4))


def test_a_fixed_size_vit_refuses_to_keep_the_aspect_in_one_line(images):
    encoder = tiny_encoder("vit")
    fixed = timm.create_model("vit_tiny_patch16_224", img_size=64, num_classes=0, **TINY)
    encoder.backbone.model.backbone = fixed
    assert encoder(images).patches.shape[-2:] == (4, 4)
    with pytest.raises(ValueError, match=r"^vit takes only 64x64 px input: it cannot keep the aspect ratio$"):
        encoder(torch.rand(1, 3, *WIDE), keep_aspect=True)


# ---------------------------------------------------------------- display


def test_bicubic_display_is_smooth_within_range_and_nearest_is_blocky():
    grid = torch.rand(3, 4, 5, generator=torch.Generator().manual_seed(2))
    blocky, smooth = upsample(grid, (40, 50)), upsample(grid, (40, 50), smooth=True)
    assert blocky.shape == smooth.shape == (3, 40, 50)
    assert torch.equal(blocky, grid.repeat_interleave(10, -2).repeat_interleave(10, -1))
    assert (smooth - blocky).abs().max() > 0.05
    assert torch.unique(smooth[0, :10, :10]).numel() > 10  # varies inside a patch
    low, high = grid.amin((1, 2)), grid.amax((1, 2))
    assert (smooth.amin((1, 2)) >= low).all() and (smooth.amax((1, 2)) <= high).all()
    assert upsample(grid[0], (8, 10), smooth=True).shape == (8, 10)
    with pytest.raises(ValueError, match="must have shape"):
        upsample(grid[None], (8, 10))


# ---------------------------------------------------------------- the app's views


@pytest.fixture(scope="module")
def explorer(encoders) -> Explorer:
    store = EncoderCache(build=lambda spec, resolution, **kwargs: encoders[spec])
    return Explorer(display=64, cache=store)


def test_layers_and_attention_are_computed_once_and_shown(explorer):
    key = explorer.add_image(torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(3)))
    store = explorer.cache
    view = attention_maps(explorer, key, ["rope-vit", "convnext"], 64, layer=0)
    assert [p.caption.split(" ·")[0] for p in view.panels] == ["input", "rope-vit"]
    assert view.notes == ["convnext gives no CLS attention (a CNN, or a ViT without a CLS token)"]
    passes = store.forward_passes
    again = attention_maps(explorer, key, ["rope-vit"], 64, layer=0)
    assert store.forward_passes == passes and (again.panels[1].image == view.panels[1].image).all()
    smooth = attention_maps(explorer, key, ["rope-vit"], 64, layer=0, smooth=True)
    assert (smooth.panels[1].image != view.panels[1].image).any() and store.forward_passes == passes
    wide_key = explorer.add_image(torch.rand(3, 48, 96))
    height, width = store.image(wide_key, keep_aspect=True).shape[-2:]
    wide = attention_maps(explorer, wide_key, ["rope-vit"], 64, keep_aspect=True)
    assert height < width and [p.image.shape[:2] for p in wide.panels] == [(height, width)] * 2

    def maps(**options: object) -> np.ndarray:
        *_, shown = explorer.feature_maps(key, ["vit"], 64, **options)
        return shown.panels[1].image

    assert not (maps(layer=0) == maps()).all()
    assert not (maps(smooth=True) == maps()).all()
    similar = explorer.similarity(key, ["vit", "convnext"], 64, (0.5, 0.5), layer=-3)
    assert [p.caption.split(" ·")[0] for p in similar.panels] == ["convnext"]
    assert similar.notes[-1] == "vit: layer -3 is out of range: this encoder shows layers 0 to 1"


def test_a_wide_image_keeps_its_aspect_in_the_views_and_a_fixed_size_vit_is_a_note(encoders):
    fixed = Encoder("fixed", "student", tiny_encoder("vit").backbone)
    fixed.backbone.model.backbone = timm.create_model(
        "vit_tiny_patch16_224", img_size=64, num_classes=0, **TINY
    )
    built = {**encoders, "fixed": fixed}
    explorer = Explorer(display=64, cache=EncoderCache(build=lambda spec, resolution, **kwargs: built[spec]))
    wide = torch.rand(3, *WIDE, generator=torch.Generator().manual_seed(4))
    key = explorer.add_image(wide)
    assert torch.equal(explorer.cache.image(key), square_view(wide, 64))  # unticked: the centre square
    size = native_size(*WIDE, 64, 1)  # the kept copy: the aspect of the image, the area of the display
    specs = ["rope-vit", "convnext", "fixed"]

    def grid(arch: str) -> str:
        encoder = encoders[arch]
        sides = native_size(*size, 64, encoder.backbone.size_multiple)
        return "x".join(str(side // encoder.patch_stride) for side in sides)

    *_, kept = explorer.feature_maps(key, specs, 64, keep_aspect=True)
    assert [p.image.shape for p in kept.panels] == [(*size, 3)] * 3 and size[0] < size[1]
    assert [p.caption for p in kept.panels[1:]] == [
        f"{a} · {grid(a)} patches" for a in ("rope-vit", "convnext")
    ]
    assert kept.notes == ["fixed takes only 64x64 px input: it cannot keep the aspect ratio"]
    assert np.array_equal(kept.panels[0].image, explorer.picture(key, keep_aspect=True))
    similar = explorer.similarity(key, specs, 64, (0.9, 0.5), keep_aspect=True)
    assert [p.image.shape for p in similar.panels] == [(*size, 3)] * 2 and len(similar.notes) == 2
    *_, square = explorer.feature_maps(key, specs, 64)
    assert [p.image.shape for p in square.panels] == [(64, 64, 3)] * 4 and not square.notes
    assert [p.caption.split(" · ")[1] for p in square.panels[1:]] == [
        "4x4 patches",
        "2x2 patches",
        "4x4 patches",
    ]
