"""The seed's ResNet-18 (11,173,962 parameters) with its normalisation inside, and its two
initialisations."""
from __future__ import annotations

import pytest
import torch

from ffcv_resnet.model import count_parameters, resnet18, summary


def test_model_is_the_seeds_resnet18_with_its_own_normalisation():
    import ffcv_resnet
    model = ffcv_resnet.resnet18(num_classes=10)
    assert count_parameters(model) == 11_173_962
    table = summary(model)
    assert "Total params: 11,173,962" in table and "Params size (MB): 42.63" in table
    rows = [line.split()[0] for line in table.splitlines() if "-" in line.split()[0][1:-1]]
    kinds = [r.rsplit("-", 1)[0] for r in rows]
    assert (kinds.count("Conv2d"), kinds.count("BatchNorm2d"), kinds.count("BasicBlock"),
            kinds.count("Linear")) == (20, 20, 8, 1)
    assert "[-1, 64, 32, 32]" in table and "[-1, 512, 4, 4]" in table
    # normalisation lives inside forward(): what conv1 really receives is (x - mean) / std
    from ffcv_resnet.data.cifar import MEAN, STD
    seen = []
    model.conv1.register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
    model.eval()
    with torch.no_grad():
        model(torch.tensor(MEAN).view(1, 3, 1, 1).expand(1, 3, 32, 32))  # the mean image
        model(torch.ones(1, 3, 32, 32))  # white
    assert torch.allclose(seen[0], torch.zeros(1, 3, 32, 32), atol=1e-6)
    white = [(1 - m) / s for m, s in zip(MEAN, STD)]  # 2.06, 2.12, 2.11 by hand
    assert torch.allclose(seen[1][0, :, 5, 7], torch.tensor(white), atol=1e-5)


def test_init_pytorch_gives_each_layers_own_default_and_nothing_else_changes():
    """torchvision's ResNet re-initialises convolutions Kaiming-normal (fan out, ReLU):
    std sqrt(2 / fan_out); PyTorch's default is uniform with std 1 / sqrt(3 fan_in), about
    2.45x smaller for a 3x3 64->64 convolution."""
    torch.manual_seed(0)
    tv = resnet18(init="torchvision")
    torch.manual_seed(0)
    pt = resnet18(init="pytorch")
    w_tv, w_pt = (m.layer1[0].conv1.weight.detach() for m in (tv, pt))  # 64 -> 64, 3x3
    fan = 64 * 9
    assert float(w_tv.std()) == pytest.approx((2 / fan) ** 0.5, rel=0.03)
    assert float(w_pt.std()) == pytest.approx(1 / (3 * fan) ** 0.5, rel=0.03)
    assert float(w_pt.abs().max()) <= 1 / fan ** 0.5  # uniform within the default's bound
    stem = pt.conv1.weight.detach()  # the stem too (model.py re-initialises it for torchvision)
    assert float(stem.std()) == pytest.approx(1 / (3 * 27) ** 0.5, rel=0.1)
    assert torch.equal(pt.bn1.weight, torch.ones(64)) and torch.equal(pt.bn1.bias, torch.zeros(64))
    assert [n for n, _ in tv.named_parameters()] == [n for n, _ in pt.named_parameters()]
    tv.load_state_dict(pt.state_dict())  # a saved model loads whatever its init was
    with pytest.raises(ValueError, match="init must be one of"):
        resnet18(init="xavier")
