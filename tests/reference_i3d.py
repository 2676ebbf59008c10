"""A test oracle: I3D written the way the pytorch-i3d port writes it.

Independent of vidistill's implementation (dynamic SAME padding before every conv
and pool, `end_points` registration, a Unit3D classifier named `logits`), so a state
dict saved from it is a checkpoint "in the pytorch-i3d layout", and its block-5
output is what vidistill must reproduce after loading that checkpoint.
"""
import torch
import torch.nn.functional as F
from torch import nn


def _pad(x, kernel, stride):
    pads = []
    for size, k, s in zip(x.shape[2:], kernel, stride):
        total = max(k - s, 0) if size % s == 0 else max(k - size % s, 0)
        pads.append((total // 2, total - total // 2))
    (tf, tb), (hf, hb), (wf, wb) = pads
    return F.pad(x, (wf, wb, hf, hb, tf, tb))


class MaxPool3dSamePadding(nn.MaxPool3d):
    def forward(self, x):
        return super().forward(_pad(x, self.kernel_size, self.stride))


class Unit3D(nn.Module):
    def __init__(self, in_channels, output_channels, kernel_shape=(1, 1, 1), stride=(1, 1, 1),
                 activation=True, use_batch_norm=True, use_bias=False):
        super().__init__()
        self.kernel_shape, self.stride, self.activation = tuple(kernel_shape), tuple(stride), activation
        self.conv3d = nn.Conv3d(in_channels, output_channels, self.kernel_shape, self.stride, padding=0, bias=use_bias)
        self.bn = nn.BatchNorm3d(output_channels, eps=0.001, momentum=0.01) if use_batch_norm else None

    def forward(self, x):
        x = self.conv3d(_pad(x, self.kernel_shape, self.stride))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.activation else x


class InceptionModule(nn.Module):
    def __init__(self, in_channels, out):
        super().__init__()
        self.b0 = Unit3D(in_channels, out[0])
        self.b1a = Unit3D(in_channels, out[1])
        self.b1b = Unit3D(out[1], out[2], (3, 3, 3))
        self.b2a = Unit3D(in_channels, out[3])
        self.b2b = Unit3D(out[3], out[4], (3, 3, 3))
        self.b3a = MaxPool3dSamePadding(kernel_size=(3, 3, 3), stride=(1, 1, 1), padding=0)
        self.b3b = Unit3D(in_channels, out[5])

    def forward(self, x):
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], 1)


class ReferenceI3D(nn.Module):
    def __init__(self, num_classes=400, in_channels=3):
        super().__init__()
        self.end_points = {
            "Conv3d_1a_7x7": Unit3D(in_channels, 64, (7, 7, 7), (2, 2, 2)),
            "MaxPool3d_2a_3x3": MaxPool3dSamePadding(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=0),
            "Conv3d_2b_1x1": Unit3D(64, 64),
            "Conv3d_2c_3x3": Unit3D(64, 192, (3, 3, 3)),
            "MaxPool3d_3a_3x3": MaxPool3dSamePadding(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=0),
            "Mixed_3b": InceptionModule(192, [64, 96, 128, 16, 32, 32]),
            "Mixed_3c": InceptionModule(256, [128, 128, 192, 32, 96, 64]),
            "MaxPool3d_4a_3x3": MaxPool3dSamePadding(kernel_size=(3, 3, 3), stride=(2, 2, 2), padding=0),
            "Mixed_4b": InceptionModule(128 + 192 + 96 + 64, [192, 96, 208, 16, 48, 64]),
            "Mixed_4c": InceptionModule(192 + 208 + 48 + 64, [160, 112, 224, 24, 64, 64]),
            "Mixed_4d": InceptionModule(160 + 224 + 64 + 64, [128, 128, 256, 24, 64, 64]),
            "Mixed_4e": InceptionModule(128 + 256 + 64 + 64, [112, 144, 288, 32, 64, 64]),
            "Mixed_4f": InceptionModule(112 + 288 + 64 + 64, [256, 160, 320, 32, 128, 128]),
            "MaxPool3d_5a_2x2": MaxPool3dSamePadding(kernel_size=(2, 2, 2), stride=(2, 2, 2), padding=0),
            "Mixed_5b": InceptionModule(256 + 320 + 128 + 128, [256, 160, 320, 32, 128, 128]),
            "Mixed_5c": InceptionModule(256 + 320 + 128 + 128, [384, 192, 384, 48, 128, 128]),
        }
        for name, module in self.end_points.items():
            self.add_module(name, module)
        self.logits = Unit3D(384 + 384 + 128 + 128, num_classes, activation=False, use_batch_norm=False, use_bias=True)

    def extract_features(self, x):
        for name in self.end_points:
            x = self._modules[name](x)
        return x
