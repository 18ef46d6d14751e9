"""ResNet18 (He et al. 2016), written here: the backbone of Diff-Tracker's motion encoders.

Standard layout: 7x7/2 stem conv, BN, ReLU, 3x3/2 max pool, then four stages of two basic
blocks (3x3 convs) with widths w, 2w, 4w, 8w (w = 64 in the paper's ResNet18), strides 1, 2, 2,
2, 1x1 projection shortcuts where the shape changes. Output stride 32. `width` scales all
channel counts (the `tiny` tracker uses w = 8); with the default it has ResNet18's 11.2M
parameters (without the classifier, which trackers do not use).
"""
from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["ResNet18", "BasicBlock"]


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 projection) shortcut.
    (B, cin, H, W) -> (B, cout, H / stride, W / stride)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(nn.Module):
    """ResNet18 feature extractor.

    Args:
        width: channels of the first stage (64 for the standard network).
        in_channels: input channels (3 for RGB).
    forward: (B, in_channels, H, W) -> (B, 8 * width, ceil(H / 32), ceil(W / 32)) features.
    """

    def __init__(self, width: int = 64, in_channels: int = 3):
        super().__init__()
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be a positive int, got {width!r}")
        self.width = width
        self.out_channels = 8 * width
        self.conv1 = nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths = [width, 2 * width, 4 * width, 8 * width]
        stages, cin = [], width
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(BasicBlock(cin, w, stride), BasicBlock(w, w, 1)))
            cin = w
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self._init_weights()

    def _init_weights(self) -> None:
        # He (fan_out) init for convs; the last BN of each residual branch starts at zero so every
        # block begins as the identity (Goyal et al. 2017), which keeps untrained features tame.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)
