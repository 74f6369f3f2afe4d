#!/usr/bin/python3
"""Writes the golden files of tests/test_model.cpp: the COVID-Rate network built
in PyTorch from its description (docs/model.md, the paper, the authors' listing)
-- not from covidrate's code -- run on seeded weights and inputs.

Regenerate (Debian 12: apt-get install python3-torch, PyTorch 1.13) from the
repository root (about a minute on two cores):

    /usr/bin/python3 tools/dev/make_model_golden.py

The full-width weights are 57.5 MB, too big for the repository, so neither
file stores weights: the weights, the inputs and the targets come from a
counter-based generator that tests/test_model.cpp implements identically
(GoldenValues there), and only the results travel:

    key     = FNV-1a 64 of the tensor's name ("enc2.unit1.conv1.weight", "input")
    u[i]    = (splitmix64(key + i) >> 11) * 2^-53          uniform in [0, 1)
    r[i]    = 2 u[i] - 1                                    uniform in [-1, 1)

computed in float64 and rounded once to float32, per tensor kind:

    conv kernel [O, I, k, k]   r * sqrt(6 / ((I + O) k^2))  (glorot_uniform's range)
    conv bias                  0.1 r
    SE fc weight [out, in]     r * sqrt(6 / in)             (variance 2 / in, as he_normal)
    BN weight (gamma)          1 + 0.25 r
    BN bias (beta)             0.1 r
    BN running_mean            0.1 r
    BN running_var             1 + 0.5 r                    (in [0.5, 1.5))
    input image                u                            (CT intensities scaled to [0, 1])

The references are computed in float64 from those float32 values.

covidrate_full_w100.safetensors (width 1, with CPB):
    eval.output   [1, 1, 512, 512] F32  evaluation mode (running statistics) on "input.eval"
    train.output  [2, 1, 64, 64]   F32  training mode (batch statistics) on "input.train"
covidrate_grad_w025.safetensors (width 0.25, with CPB, training mode, batch 2, 128 x 128):
    output        [2, 1, 128, 128] F16  probabilities on "input.grad"
    loss          [1]              F64  the hybrid loss (kernels/ops.h defaults) against
                                        the target: disks, see target_disks()
    grad.<name>   BF16 (to fit 2 MB)    d loss / d parameter, every parameter
    state.<name>  F32                   every BN running statistic after the step
"""
import json
import os
import struct

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "golden")
MASK64 = (1 << 64) - 1

# ---------------------------------------------------------------- the shared generator


def fnv1a64(text):
    h = 0xCBF29CE484222325
    for byte in text.encode():
        h = ((h ^ byte) * 0x100000001B3) & MASK64
    return h


def uniform(name, count):
    """u[i] = (splitmix64(fnv1a64(name) + i) >> 11) * 2^-53, float64."""
    with np.errstate(over="ignore"):
        z = np.uint64(fnv1a64(name)) + np.arange(count, dtype=np.uint64)
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


def golden_value(name, shape):
    """The value of a parameter, BN statistic or input, rounded to float32, as float64."""
    count = int(np.prod(shape))
    r = 2.0 * uniform(name, count) - 1.0
    if name.startswith("input"):
        v = uniform(name, count)
    elif ".se." in name:  # SE fully connected weight [out, in]
        v = r * np.sqrt(6.0 / shape[1])
    elif len(shape) == 4:  # conv kernel
        v = r * np.sqrt(6.0 / ((shape[0] + shape[1]) * shape[2] * shape[3]))
    elif name.endswith("running_var"):
        v = 1.0 + 0.5 * r
    elif name.endswith("running_mean") or name.endswith(".bias"):  # BN beta and conv bias
        v = 0.1 * r
    elif name.endswith(".weight"):  # BN gamma
        v = 1.0 + 0.25 * r
    else:
        raise ValueError(name)
    return torch.from_numpy(v.astype(np.float32).astype(np.float64).reshape(shape))


def target_disks(n, size):
    """Sample b holds a disk of radius size/4 centred at (size/2 + 8b, size/2 - 4b)."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    masks = []
    for b in range(n):
        cy, cx, r = size // 2 + 8 * b, size // 2 - 4 * b, size // 4
        masks.append(((yy - cy) ** 2 + (xx - cx) ** 2 < r * r).double())
    return torch.stack(masks).unsqueeze(1)


# ---------------------------------------------------------------- the network


def channels(c, width):
    return max(8, int(round(c * width / 8.0)) * 8)


def bn(c):
    return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)


class SE(nn.Module):
    """Residual squeeze-and-excitation: x * sigmoid(fc2(relu(fc1(mean(x))))) + x."""

    def __init__(self, c):
        super().__init__()
        self.fc1 = nn.Linear(c, max(1, c // 16), bias=False)
        self.fc2 = nn.Linear(max(1, c // 16), c, bias=False)

    def forward(self, x):
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3))))))
        return x * s[:, :, None, None] + x


class Unit(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, padding=1), bn(cout)
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, padding=2, dilation=2), bn(cout)
        self.se = SE(cout)
        self.projection = stride != 1 or cin != cout
        if self.projection:
            self.shortcut, self.shortcut_bn = nn.Conv2d(cin, cout, 1, stride), bn(cout)

    def forward(self, x):
        y = self.se(F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))))
        return y + (self.shortcut_bn(self.shortcut(x)) if self.projection else x)


class Encoder(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.unit1, self.unit2 = Unit(cin, cout, 2), Unit(cout, cout, 1)

    def forward(self, x):
        return self.unit2(self.unit1(x))


class CPB(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv1x1 = nn.Conv2d(cin, cout, 1)
        self.conv_d1 = nn.Conv2d(cin, cout, 3, padding=1, dilation=1)
        self.conv_d2 = nn.Conv2d(cin, cout, 3, padding=2, dilation=2)
        self.conv_d4 = nn.Conv2d(cin, cout, 3, padding=4, dilation=4)
        self.conv_d8 = nn.Conv2d(cin, cout, 3, padding=8, dilation=8)
        self.bn = bn(cout)

    def forward(self, x):
        s = self.conv1x1(x) + self.conv_d1(x) + self.conv_d2(x) + self.conv_d4(x) + self.conv_d8(x)
        return F.relu(self.bn(s))


class Decoder(nn.Module):
    def __init__(self, cin, cskip, cout):
        super().__init__()
        self.up_conv, self.up_bn = nn.Conv2d(cin, cout, 3, padding=1), bn(cout)
        self.transition = nn.Conv2d(cskip, cout, 1)
        self.conv, self.bn = nn.Conv2d(2 * cout, cout, 3, padding=2, dilation=2), bn(cout)
        self.se = SE(cout)

    def forward(self, x, skip):
        up = F.relu(self.up_bn(self.up_conv(F.interpolate(x, scale_factor=2, mode="nearest"))))
        t = F.relu(self.transition(skip))
        return self.se(F.relu(self.bn(self.conv(torch.cat([up, t], dim=1)))))


class Stem(nn.Module):
    def __init__(self, cout):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(1, cout, 7, padding=3), bn(cout)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class Head(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.conv = nn.Conv2d(cin, 1, 1)

    def forward(self, x):
        return torch.sigmoid(self.conv(x))


class CovidRate(nn.Module):
    def __init__(self, width=1.0, cpb=True):
        super().__init__()
        enc = [channels(c, width) for c in (32, 64, 128, 256)]
        dec = [channels(c, width) for c in (512, 256, 128, 64)]
        self.stem = Stem(channels(32, width))
        ins = [channels(32, width)] + enc[:3]  # the input of each encoding block = its skip
        for i in range(4):
            setattr(self, f"enc{i + 1}", Encoder(ins[i], enc[i]))
        c = enc[3]
        self.use_cpb = cpb
        if cpb:
            self.cpb = CPB(c, channels(256, width))
            c = channels(256, width)
        for i in range(4):
            setattr(self, f"dec{i + 1}", Decoder(c, ins[3 - i], dec[i]))
            c = dec[i]
        self.head = Head(c)

    def forward(self, x):
        skips = []
        x = self.stem(x)
        for i in range(4):
            skips.append(x)
            x = getattr(self, f"enc{i + 1}")(x)
        if self.use_cpb:
            x = self.cpb(x)
        for i in range(4):
            x = getattr(self, f"dec{i + 1}")(x, skips[3 - i])
        return self.head(x)


def seeded_network(width):
    net = CovidRate(width).double()
    state = {name: golden_value(name, tuple(t.shape))
             for name, t in net.state_dict().items() if not name.endswith("num_batches_tracked")}
    missing, unexpected = net.load_state_dict(state, strict=False)
    assert not unexpected and all(m.endswith("num_batches_tracked") for m in missing)
    return net


def hybrid_loss(p, y, pos_weight=1.0, alpha=0.7, beta=0.3, gamma=4.0 / 3.0, smooth=1.0, eps=1e-7):
    pc = p.clamp(eps, 1 - eps)
    wbce = (-(1 + pos_weight * y) * (y * torch.log(pc) + (1 - y) * torch.log(1 - pc))).mean()
    tp, fn, fp = (p * y).sum(), ((1 - p) * y).sum(), (p * (1 - y)).sum()
    ti = (tp + smooth) / (tp + alpha * fn + beta * fp + smooth)
    return wbce + (1 - ti) ** (1 / gamma)


# ---------------------------------------------------------------- writing

DTYPES = {"F32": (torch.float32, 4), "F64": (torch.float64, 8), "F16": (torch.float16, 2),
          "BF16": (torch.bfloat16, 2)}


def tensor_bytes(t, dtype):
    t = t.detach().contiguous().to(DTYPES[dtype][0])
    if dtype == "BF16":  # numpy has no bfloat16: reinterpret as int16
        return t.view(torch.int16).numpy().tobytes()
    return t.numpy().tobytes()


def write_safetensors(path, tensors, metadata):
    """tensors: name -> (tensor, dtype name)."""
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        t, dtype = tensors[name]
        data = tensor_bytes(t, dtype)
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)
    print(f"wrote {len(tensors)} tensors, {os.path.getsize(path)} bytes to {os.path.normpath(path)}")


def describe(name, t):
    print(f"  {name}: {tuple(t.shape)} min {t.min().item():.4g} mean {t.mean().item():.4g} "
          f"max {t.max().item():.4g}")


def full_width():
    net = seeded_network(1.0)
    out = {}
    with torch.no_grad():
        net.eval()
        y = net(golden_value("input.eval", (1, 1, 512, 512)))
        describe("eval.output", y)
        out["eval.output"] = (y, "F32")
        net.train()
        y = net(golden_value("input.train", (2, 1, 64, 64)))
        describe("train.output", y)
        out["train.output"] = (y, "F32")
    write_safetensors(os.path.join(GOLDEN, "covidrate_full_w100.safetensors"), out,
                      {"generator": "tools/dev/make_model_golden.py", "torch": torch.__version__,
                       "width": "1", "cpb": "true"})


def gradients_w025():
    net = seeded_network(0.25)
    net.train()
    y = net(golden_value("input.grad", (2, 1, 128, 128)))
    loss = hybrid_loss(y, target_disks(2, 128))
    loss.backward()
    describe("output", y.detach())
    print(f"  loss {loss.item():.6g}")
    out = {"output": (y, "F16"), "loss": (loss.detach().reshape(1), "F64")}
    for name, p in net.named_parameters():
        out["grad." + name] = (p.grad, "BF16")
    for name, b in net.named_buffers():
        if not name.endswith("num_batches_tracked"):
            out["state." + name] = (b, "F32")
    write_safetensors(os.path.join(GOLDEN, "covidrate_grad_w025.safetensors"), out,
                      {"generator": "tools/dev/make_model_golden.py", "torch": torch.__version__,
                       "width": "0.25", "cpb": "true"})


if __name__ == "__main__":
    torch.set_num_threads(2)
    gradients_w025()
    full_width()
