"""The papers' model zoo: shapes at the smallest input, layers from the factory, published
parameter counts, torchvision compatibility, input-size validation and pretrained weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision
from engine_tools import RecordingFactory
from safetensors.torch import save_file
from torch import nn

from trainables.config import MODEL_MIN_SIDE, ConfigError, ExperimentConfig
from trainables.models import build_model
from trainables.models.dst_small import SMALL_MLP_HIDDEN
from trainables.models.layers import DENSE
from trainables.models.mlp import MLP
from trainables.models.pretrained import (
    check_pretrained,
    copy_pretrained_weights,
    load_weight_tensors,
    weight_layers,
)
from trainables.models.torchvision_zoo import torchvision_model, use_factory_layers
from trainables.sparse.masked import MASKED, MaskedConv2d, MaskedLinear
from trainables.sparse.supermask import SUPERMASK, SupermaskConv2d, SupermaskLinear

ZOO = ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnext29_32x4d",
       "convmixer_256_8", "mlp_small", "mlp_large", "cnn_small", "lenet5_caffe", "vgg16_bn",
       "resnet50", "resnet101", "wide_resnet50_2", "efficientnet_b0")
TORCHVISION = ("resnet50", "resnet101", "wide_resnet50_2", "efficientnet_b0")
FACTORIES = {"dense": DENSE, "supermask": SUPERMASK, "masked": MASKED}
# The layer types each factory must leave in the model, and nothing else.
CONV_LINEAR_TYPES = {"dense": {nn.Conv2d, nn.Linear},
                     "supermask": {SupermaskConv2d, SupermaskLinear},
                     "masked": {MaskedConv2d, MaskedLinear}}


def _cfg(model: str, dataset: str = "cifar10", **kw) -> ExperimentConfig:
    overrides = {"model.name": model, "data.dataset": dataset, **kw}
    if dataset != "digits":
        overrides["data.data_dir"] = "/unused"  # models never read data
    return ExperimentConfig().with_overrides(overrides)


def _count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())




# ----- every model, every factory, smallest input ---------------------------------------

@pytest.mark.parametrize("factory", list(FACTORIES))
@pytest.mark.parametrize("model", ZOO)
def test_smallest_input_forward_and_every_layer_from_factory(model: str, factory: str) -> None:
    side = MODEL_MIN_SIDE[model]
    cfg = _cfg(model, **{"data.resize": side})
    rec = RecordingFactory(FACTORIES[factory])
    net = build_model(cfg, rec.factory)
    out = net(torch.randn(2, 3, side, side))
    assert out.shape == (2, 10)
    weighted = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d))]
    assert weighted and {id(m) for m in weighted} == {id(m) for m in rec.made}
    kinds = {type(m) for m in weighted if not isinstance(m, nn.BatchNorm2d)}
    assert kinds <= CONV_LINEAR_TYPES[factory], f"stray layers: {kinds - CONV_LINEAR_TYPES[factory]}"
    if factory == "supermask":
        assert all(not bn.affine for bn in net.modules() if isinstance(bn, nn.BatchNorm2d))
        assert all(m.bias is None for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


@pytest.mark.parametrize("model", ["cnn_small", "lenet5_caffe", "vgg16_bn"])
def test_smallest_input_is_the_real_limit(model: str) -> None:
    """One pixel less and the network itself cannot run (a pool or a conv reaches 0px)."""
    net = build_model(_cfg(model, **{"data.resize": MODEL_MIN_SIDE[model]}), DENSE)
    side = MODEL_MIN_SIDE[model] - 1
    with pytest.raises(RuntimeError):
        net(torch.randn(2, 3, side, side))


@pytest.mark.parametrize("model", ["resnext29_32x4d", "convmixer_256_8"])
def test_grouped_and_depthwise_supermask_convs_pass_gradients_to_scores(model: str) -> None:
    net = build_model(_cfg(model, **{"data.resize": 8}), SUPERMASK)
    net(torch.randn(2, 3, 8, 8)).sum().backward()
    grouped = [m for m in net.modules() if isinstance(m, SupermaskConv2d) and m.groups > 1]
    assert grouped and all(m.scores.grad is not None and m.scores.grad.abs().sum() > 0
                           for m in grouped)
    assert all(m.weight.grad is None for m in grouped)  # frozen


def test_mlp_small_takes_the_tabular_width() -> None:
    """The Higgs MLP sees 24 features (the tabular `higgs` dataset), not images; on an image
    dataset the same model flattens the pixels."""
    net = MLP(DENSE, 24, SMALL_MLP_HIDDEN, 2)
    assert net(torch.randn(2, 24)).shape == (2, 2)
    net = build_model(_cfg("mlp_small", "digits"), SUPERMASK)  # 8x8x1 = 64 inputs
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    assert next(m for m in net.modules() if isinstance(m, nn.Linear)).in_features == 64


def test_mlp_small_on_higgs_is_the_papers_mlp_with_two_logits() -> None:
    """Table 2's small-MLP (72,449 with one logit) + one more output unit: 72,449 + 257."""
    net = build_model(_cfg("mlp_small", "higgs"), DENSE)
    assert _count(net) == 72_449 + 257
    assert net(torch.randn(2, 24, 1, 1)).shape == (2, 2)


# ----- architecture facts --------------------------------------------------------------

def test_resnet18_times_two_doubles_every_stage() -> None:
    """ResNet-18x2 of soft-iep.txt §5 is model.width=2: every conv and the head input double."""
    def stage_widths(width: float) -> tuple[int, list[set[int]], int]:
        net = build_model(_cfg("resnet18", **{"model.width": width}), DENSE)
        stages = [{m.out_channels for m in stage.modules() if isinstance(m, nn.Conv2d)}
                  for stage in net.stages]
        return net.stem[0].out_channels, stages, net.fc.in_features
    assert stage_widths(1.0) == (64, [{64}, {128}, {256}, {512}], 512)
    assert stage_widths(2.0) == (128, [{128}, {256}, {512}, {1024}], 1024)
    # Conv weights x4 except the stem's (its input stays 3 channels: x2), BN x2, fc 1024*10+10:
    #   4 * 11,159,232 - 2 * 1,728 + 2 * 9,600 + 10,250 = 44,662,922
    assert _count(build_model(_cfg("resnet18", **{"model.width": 2}), DENSE)) == 44_662_922


def test_cifar_resnet_counts() -> None:
    # ResNet-20 by hand (conv k*k*in*out, BN 2 per channel, 1x1 projection where shapes change):
    #   stem   3*16*9 + 32                                              =     464
    #   stage1 3 * (2*16*16*9 + 4*16)                                   =  14,016
    #   stage2 (16*32*9 + 32*32*9 + 4*32 + 16*32 + 2*32) + 2*(2*32*32*9 + 4*32) = 51,648
    #   stage3 (32*64*9 + 64*64*9 + 4*64 + 32*64 + 2*64) + 2*(2*64*64*9 + 4*64) = 205,696
    #   fc     64*10 + 10                                               =     650
    assert _count(build_model(_cfg("resnet20"), DENSE)) == 272_474  # He et al. Table 6: 0.27M
    # fantastic-weights-dst.txt Appendix A, Table 2 caption: ResNet-56 has 855,770 parameters.
    assert _count(build_model(_cfg("resnet56"), DENSE)) == 855_770
    # He et al. Table 6: ResNet-110 1.7M; 100 classes add 90 * 65 to the head.
    assert _count(build_model(_cfg("resnet110"), DENSE)) == 1_730_714
    assert _count(build_model(_cfg("resnet56", "cifar100"), DENSE)) == 855_770 + 90 * 65
    depths = {m: sum(isinstance(x, nn.Conv2d) and x.kernel_size == (3, 3)
                     for x in build_model(_cfg(m), DENSE).modules()) + 1
              for m in ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110")}
    assert depths == {"resnet20": 20, "resnet32": 32, "resnet44": 44, "resnet56": 56, "resnet110": 110}


def test_resnext29_32x4d_count_and_groups() -> None:
    net = build_model(_cfg("resnext29_32x4d"), DENSE)
    # By hand, kuangliu's ResNeXt29_32x4d at 10 classes (grouped 3x3: gw * gw/32 * 9):
    #   conv1 3*64 + bn1 2*64                                                      =       320
    #   layer1 (gw 128 -> 256): 64*128 + 128*4*9 + 128*256 + 2*512 + 64*256 + 512
    #          + 2 * (256*128 + 128*4*9 + 128*256 + 2*512)                         =   205,824
    #   layer2 (gw 256 -> 512): 256*256 + 256*8*9 + 256*512 + 2*1024 + 256*512 + 1024
    #          + 2 * (512*256 + 256*8*9 + 256*512 + 2*1024)                        =   914,432
    #   layer3 (gw 512 -> 1024): 512*512 + 512*16*9 + 512*1024 + 2*2048 + 512*1024 + 2048
    #          + 2 * (1024*512 + 512*16*9 + 512*1024 + 2*2048)                     = 3,643,392
    #   linear 1024*10 + 10                                                        =    10,250
    assert _count(net) == 4_774_218  # "ResNeXt-29 32x4d ~ 4.8M"
    grouped = [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert [(m.groups, m.in_channels, m.stride) for m in grouped] == (
        [(32, 128, (1, 1))] * 3 + [(32, 256, (2, 2))] + [(32, 256, (1, 1))] * 2
        + [(32, 512, (2, 2))] + [(32, 512, (1, 1))] * 2)


def test_convmixer_256_8_count_and_reference_layout() -> None:
    net = build_model(_cfg("convmixer_256_8"), DENSE)
    # stem 3*256*2*2 + 256 + BN 512; 8 blocks of depthwise 256*5*5 + 256, BN 512,
    # pointwise 256*256 + 256, BN 512; head 256*10 + 10:
    #   3,328 + 512 + 8 * 73,472 + 2,570 = 594,186
    assert _count(net) == 594_186
    depthwise = [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert len(depthwise) == 8
    assert all(m.groups == 256 and m.kernel_size == (5, 5) and m.padding == (2, 2) for m in depthwise)
    assert net[0].kernel_size == net[0].stride == (2, 2)
    assert sum(isinstance(m, nn.GELU) for m in net.modules()) == 1 + 2 * 8
    # The reference nesting (nn.Sequential + Residual(fn)): its state-dict keys.
    keys = set(net.state_dict())
    assert {"0.weight", "2.running_mean", "3.0.fn.0.weight", "3.1.weight", "10.3.bias",
            "13.weight"} <= keys


def test_dst_table2_counts() -> None:
    """fantastic-weights-dst.txt Appendix A, Table 2, "Num. Parameters (Dense)"."""
    small = MLP(DENSE, 24, SMALL_MLP_HIDDEN, 1)  # the paper's single logit output
    assert _count(small) == 72_449
    assert _count(build_model(_cfg("mlp_large"), DENSE)) == 3_676_682
    assert _count(build_model(_cfg("cnn_small"), DENSE)) == 94_538


def test_lenet5_caffe_and_vgg16_bn_counts() -> None:
    # LeNet-5-Caffe at 28px: 1*20*25+20 + 20*50*25+50 + 800*500+500 + 500*10+10 = 431,080
    lenet = build_model(_cfg("lenet5_caffe", "fashionmnist"), DENSE)
    assert _count(lenet) == 431_080 and lenet.fc3.in_features == 50 * 4 * 4
    # VGG-16-BN on CIFAR-100: 13 convs (no bias) 14,710,464 + BN 2 * 4,224 + 512*100 + 100
    vgg = build_model(_cfg("vgg16_bn", "cifar100"), DENSE)
    assert _count(vgg) == 14_770_212
    assert sum(isinstance(m, nn.MaxPool2d) for m in vgg.modules()) == 4


# torchvision's published "num_params" (docs and weights metadata) at 1000 classes.
TORCHVISION_COUNTS = {"resnet50": 25_557_032, "resnet101": 44_549_160,
                      "wide_resnet50_2": 68_883_240, "efficientnet_b0": 5_288_548}


@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_counts_and_state_dict_keys(name: str) -> None:
    with torch.device("meta"):  # shapes only: no memory, no init
        ours = torchvision_model(name, DENSE, 1000)
        theirs = torchvision.models.get_model(name, weights=None)
    assert _count(ours) == TORCHVISION_COUNTS[name]
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
           {k: v.shape for k, v in theirs.state_dict().items()}
    if name == "resnet50":  # the DST paper counts conv + linear weights: 25,502,912
        assert sum(m.weight.numel() for m in weight_layers(ours).values()) == 25_502_912


@pytest.mark.parametrize(("name", "side"), [("resnet50", 32), ("efficientnet_b0", 64)])
def test_torchvision_state_dict_loads_strictly_and_computes_the_same(name: str, side: int) -> None:
    torch.manual_seed(0)
    theirs = torchvision.models.get_model(name, weights=None, num_classes=10).eval()
    ours = build_model(_cfg(name), DENSE)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    ours.eval()
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x))
    bn_eps = {m.eps for m in ours.modules() if isinstance(m, nn.BatchNorm2d)}
    assert bn_eps == {m.eps for m in theirs.modules() if isinstance(m, nn.BatchNorm2d)}


def test_converter_serves_any_conv_net_and_refuses_what_it_cannot_build() -> None:
    net = torchvision_model("resnet18", SUPERMASK, 10)  # not registered, converts the same way
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert not [m for m in net.modules() if type(m) in (nn.Conv2d, nn.Linear)]
    with pytest.raises(ValueError, match="class_token|LayerNorm"):
        torchvision_model("vit_b_16", DENSE, 10)
    with pytest.raises(ValueError, match="dilation"):
        use_factory_layers(nn.Sequential(nn.Conv2d(3, 4, 3, dilation=2)), DENSE)


# ----- validation before anything runs ---------------------------------------------------

@pytest.mark.parametrize("model", [m for m in ZOO if MODEL_MIN_SIDE[m] > 1])
def test_too_small_input_is_one_config_error(model: str) -> None:
    need = MODEL_MIN_SIDE[model]
    _cfg(model, **{"data.resize": need})
    with pytest.raises(ConfigError, match=rf"^model.name: {model} needs images of at least "
                                          rf"{need}px, but cifar10 gives {need - 1}px \(set "
                                          rf"data.resize=\d+\)$"):
        _cfg(model, **{"data.resize": need - 1})


def test_torchvision_models_refuse_digits_grey_images_and_widths() -> None:
    with pytest.raises(ConfigError, match=r"^model.name: resnet50 needs images of at least 32px, "
                                          r"but digits gives 8px \(set data.resize=32\)$"):
        _cfg("resnet50", "digits")
    with pytest.raises(ConfigError, match=r"^model.name: efficientnet_b0 .* 3-channel .* mnist has 1"):
        _cfg("efficientnet_b0", "mnist", **{"data.resize": 32})
    with pytest.raises(ConfigError, match=r"^model.width: resnet101 .* only width 1, got 2"):
        _cfg("resnet101", **{"model.width": 2})
    _cfg("mlp_small", "digits")
    _cfg("resnet20", "digits")  # 8px: the 3-stage CIFAR nets end at 2x2


@pytest.mark.parametrize("model", ["resnet56", "vgg16_bn", "lenet5_caffe", "convmixer_256_8"])
def test_width_multiplier_scales_the_zoo(model: str) -> None:
    def widths(width: float) -> list[int]:
        net = build_model(_cfg(model, **{"model.width": width}), DENSE)
        return [m.out_channels for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert widths(2.0) == [2 * w for w in widths(1.0)]


# ----- pretrained weights ----------------------------------------------------------------

def _dense_resnet20(classes: int = 10) -> nn.Module:
    torch.manual_seed(1)
    return build_model(_cfg("resnet20", "cifar100" if classes == 100 else "cifar10"), DENSE)


@pytest.mark.parametrize("layout", ["plain", "engine", "state_dict", "ddp", "safetensors"])
def test_load_weight_tensors_layouts(tmp_path: Path, layout: str) -> None:
    sd = _dense_resnet20().state_dict()
    path = tmp_path / ("w.safetensors" if layout == "safetensors" else "w.pt")
    if layout == "safetensors":
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        payload = {"plain": sd, "engine": {"model": sd, "epoch": 3, "config_hash": "abc"},
                   "state_dict": {"state_dict": sd, "arch": "resnet20"},
                   "ddp": {f"module.{k}": v for k, v in sd.items()}}[layout]
        torch.save(payload, path)
    loaded = load_weight_tensors(path)
    assert loaded.keys() == sd.keys()
    assert all(torch.equal(loaded[k], sd[k]) for k in sd)


def test_load_refuses_a_file_without_a_state_dict(tmp_path: Path) -> None:
    torch.save({"epoch": 3, "weights": [torch.zeros(2)]}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="holds no state dict"):
        load_weight_tensors(tmp_path / "x.pt")


class _Payload:
    """A pickled object that runs code when unpickled: writes a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def test_malicious_pickle_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    sd = _dense_resnet20().state_dict()
    path = tmp_path / "evil.pt"
    torch.save({"model": sd, "extra": _Payload(marker)}, path)
    with pytest.raises(ValueError, match="refused to unpickle"):
        load_weight_tensors(path)
    with pytest.raises(ConfigError, match=r"^method.pretrained_path: evil.pt is not a weights-only"):
        check_pretrained(_cfg("resnet20"), path)
    assert not marker.exists()
    # The payload is live: an unrestricted load runs it (so the checks above can fail).
    torch.load(path, weights_only=False)
    assert marker.read_text() == "pwned"


@pytest.mark.parametrize("factory", ["supermask", "masked", "dense"])
def test_copy_pretrained_weights_by_name(factory: str) -> None:
    source = _dense_resnet20()
    torch.manual_seed(2)
    model = build_model(_cfg("resnet20"), FACTORIES[factory])
    first = next(iter(weight_layers(model).values()))
    if factory == "masked":  # a pruned layer keeps its zeros after the copy
        first.set_mask(torch.rand_like(first.weight) < 0.5)
    copied = copy_pretrained_weights(model, source.state_dict())
    assert copied == list(weight_layers(model)) and len(copied) == 19 + 2 + 1  # convs, projections, fc
    src = source.state_dict()
    for key, layer in weight_layers(model).items():
        expect = src[key] * layer.mask if isinstance(layer, MaskedConv2d) else src[key]
        assert torch.equal(layer.weight, expect), key
    if factory == "masked":
        assert (first.weight[~first.mask] == 0).all() and (first.weight[first.mask] != 0).any()


def test_copy_names_the_first_bad_layer_and_changes_nothing() -> None:
    model = build_model(_cfg("resnet20"), SUPERMASK)
    before = {k: m.weight.clone() for k, m in weight_layers(model).items()}
    wrong_head = _dense_resnet20(100).state_dict()
    with pytest.raises(ValueError, match=r"'fc.weight' has shape \[100, 64\], the model expects \[10, 64\]"):
        copy_pretrained_weights(model, wrong_head)
    missing = dict(_dense_resnet20().state_dict())
    del missing["stages.1.0.conv2.weight"]
    with pytest.raises(ValueError, match=r"no tensor 'stages.1.0.conv2.weight' \(the model "
                                         r"expects shape \[32, 32, 3, 3\]\)"):
        copy_pretrained_weights(model, missing)
    bigger = build_model(_cfg("resnet56"), DENSE).state_dict()  # every resnet20 layer + more
    with pytest.raises(ValueError, match=r"'stages.0.3.conv1.weight' .* that the model lacks"):
        copy_pretrained_weights(model, bigger)
    assert all(torch.equal(before[k], m.weight) for k, m in weight_layers(model).items())


def test_check_pretrained_passes_and_names_the_layer(tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    torch.save({"model": _dense_resnet20().state_dict(), "epoch": 100}, good)
    check_pretrained(_cfg("resnet20"), good)
    with pytest.raises(ConfigError) as info:
        check_pretrained(_cfg("resnet20", "cifar100"), good)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith("method.pretrained_path: good.pt does not fit model.name=resnet20: "
                          "'fc.weight' has shape [10, 64], the model expects [100, 64]")
    with pytest.raises(ConfigError, match=r"model.name=vgg16_bn: no tensor 'feature.0.weight'"):
        check_pretrained(_cfg("vgg16_bn"), good)
    with pytest.raises(ConfigError, match="no file at"):
        check_pretrained(_cfg("resnet20"), tmp_path / "absent.pt")


def test_check_pretrained_reads_only_the_safetensors_header(tmp_path: Path) -> None:
    """A torchvision file for a supermask EfficientNet; the check never reads tensor data."""
    torch.manual_seed(0)
    tv = torchvision.models.get_model("efficientnet_b0", weights=None, num_classes=10)
    path = tmp_path / "effnet.safetensors"
    save_file({k: v.contiguous() for k, v in tv.state_dict().items()}, str(path))
    cfg = _cfg("efficientnet_b0")
    check_pretrained(cfg, path)
    model = build_model(cfg, SUPERMASK)
    copy_pretrained_weights(model, load_weight_tensors(path))
    assert torch.equal(model.features[0][0].weight, tv.features[0][0].weight)
    # Keep the header, drop the data: the check still passes, a full load cannot.
    header_len = int.from_bytes(path.read_bytes()[:8], "little")
    assert json.loads(path.read_bytes()[8:8 + header_len])
    truncated = tmp_path / "header_only.safetensors"
    truncated.write_bytes(path.read_bytes()[:8 + header_len])
    check_pretrained(cfg, truncated)
    with pytest.raises(Exception):  # noqa: B017 - safetensors' own error type
        load_weight_tensors(truncated)

