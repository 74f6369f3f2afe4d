#!/usr/bin/python3
"""Writes tests/golden/ops_golden.safetensors: reference values from PyTorch for
tests/test_golden.cpp, which compares covidrate's CPU ops against them.

Regenerate (Debian 12: apt-get install python3-torch, PyTorch 1.13) from the
repository root:

    /usr/bin/python3 tools/dev/make_golden.py

Inputs are drawn from a fixed seed and rounded to float32; every reference is
then computed in float64 from those float32 values and stored as float32, so the
file holds exactly the inputs the C++ test feeds to the ops. The test needs
neither Python nor PyTorch.

Contents (names are "<group>.<tensor>"):
  conv.*   conv2d, 3x3 kernel, dilation 2, stride 2, padding 2, with bias:
           x, w, b, dy -> y, dx, dw, db
  bn.*     batch norm in training mode (eps 1e-3, momentum 0.01, PyTorch's
           running-average convention with the unbiased variance):
           x, gamma, beta, running_mean, running_var, dy
           -> y, save_mean, save_invstd, new_running_mean, new_running_var, dx, dgamma, dbeta
  se.*     residual squeeze-and-excitation y = x * s + x, s = sigmoid(relu(gap(x) w1^T) w2^T):
           x, w1, w2, dy -> y, dx, dw1, dw2
  loss.*   the hybrid loss of kernels/ops.h (pos_weight 2, alpha 0.7, beta 0.3,
           gamma 4/3, smooth 1, eps 1e-7): p, y -> loss, dp (gradient of the loss)
  adam.*   three Keras-2 Adam steps (lr 0.01, decay 0.1, betas 0.9/0.999, eps 1e-7)
           from m = v = 0 with gradients g1, g2, g3: w0 -> w3, m3, v3
"""
import json
import os
import struct

import torch
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "golden",
                   "ops_golden.safetensors")

gen = torch.Generator().manual_seed(20220527)


def randn(*shape, scale=1.0):
    """float32-rounded normal values, returned as float64 for the reference math."""
    return (torch.randn(*shape, generator=gen) * scale).float().double()


def uniform(lo, hi, *shape):
    return (lo + (hi - lo) * torch.rand(*shape, generator=gen)).float().double()


def leaf(t):
    return t.clone().requires_grad_(True)


golden = {}


def conv():
    x, w, b = leaf(randn(2, 3, 9, 9)), leaf(randn(4, 3, 3, 3, scale=0.5)), leaf(randn(4))
    y = F.conv2d(x, w, b, stride=2, padding=2, dilation=2)
    dy = randn(*y.shape)
    y.backward(dy)
    golden.update({"conv.x": x, "conv.w": w, "conv.b": b, "conv.dy": dy, "conv.y": y,
                   "conv.dx": x.grad, "conv.dw": w.grad, "conv.db": b.grad})


def batchnorm():
    eps, momentum = 1e-3, 0.01
    x = leaf(randn(2, 3, 4, 5, scale=2.0) + 0.5)
    gamma, beta = leaf(uniform(0.5, 1.5, 3)), leaf(randn(3))
    running_mean, running_var = randn(3), uniform(0.5, 2.0, 3)
    new_mean, new_var = running_mean.clone(), running_var.clone()
    y = F.batch_norm(x, new_mean, new_var, gamma, beta, training=True, momentum=momentum, eps=eps)
    dy = randn(*y.shape)
    y.backward(dy)
    with torch.no_grad():
        save_mean = x.mean(dim=(0, 2, 3))
        save_invstd = 1.0 / torch.sqrt(x.var(dim=(0, 2, 3), unbiased=False) + eps)
    golden.update({"bn.x": x, "bn.gamma": gamma, "bn.beta": beta, "bn.running_mean": running_mean,
                   "bn.running_var": running_var, "bn.dy": dy, "bn.y": y,
                   "bn.save_mean": save_mean, "bn.save_invstd": save_invstd,
                   "bn.new_running_mean": new_mean, "bn.new_running_var": new_var,
                   "bn.dx": x.grad, "bn.dgamma": gamma.grad, "bn.dbeta": beta.grad})


def squeeze_excitation():
    x = leaf(randn(2, 8, 4, 4))
    w1, w2 = leaf(randn(2, 8, scale=0.7)), leaf(randn(8, 2, scale=0.7))
    z = x.mean(dim=(2, 3))
    s = torch.sigmoid(torch.relu(z @ w1.t()) @ w2.t())
    y = x * s[:, :, None, None] + x
    dy = randn(*y.shape)
    y.backward(dy)
    golden.update({"se.x": x, "se.w1": w1, "se.w2": w2, "se.dy": dy, "se.y": y,
                   "se.dx": x.grad, "se.dw1": w1.grad, "se.dw2": w2.grad})


def hybrid_loss():
    pos_weight, alpha, beta, gamma, smooth, eps = 2.0, 0.7, 0.3, 4.0 / 3.0, 1.0, 1e-7
    p = leaf(torch.sigmoid(randn(2, 1, 8, 8, scale=2.0)).float().double())
    y = (torch.rand(2, 1, 8, 8, generator=gen) < 0.3).double()
    pc = p.clamp(eps, 1 - eps)
    wbce = (-(1 + pos_weight * y) * (y * torch.log(pc) + (1 - y) * torch.log(1 - pc))).mean()
    tp, fn, fp = (p * y).sum(), ((1 - p) * y).sum(), (p * (1 - y)).sum()
    ti = (tp + smooth) / (tp + alpha * fn + beta * fp + smooth)
    loss = wbce + (1 - ti) ** (1 / gamma)
    loss.backward()
    golden.update({"loss.p": p, "loss.y": y, "loss.loss": loss.reshape(1), "loss.dp": p.grad})


def adam():
    lr, decay, b1, b2, eps = 0.01, 0.1, 0.9, 0.999, 1e-7
    w = randn(50)
    golden["adam.w0"] = w.clone()
    m, v = torch.zeros(50, dtype=torch.float64), torch.zeros(50, dtype=torch.float64)
    for t in (1, 2, 3):
        g = randn(50)
        golden[f"adam.g{t}"] = g
        lr_t = lr / (1 + decay * (t - 1)) * (1 - b2 ** t) ** 0.5 / (1 - b1 ** t)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        w = w - lr_t * m / (v.sqrt() + eps)
    golden.update({"adam.w3": w, "adam.m3": m, "adam.v3": v})


def write_safetensors(path, tensors, metadata):
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        data = tensors[name].detach().contiguous().float().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


if __name__ == "__main__":
    for make in (conv, batchnorm, squeeze_excitation, hybrid_loss, adam):
        make()
    write_safetensors(OUT, golden, {"generator": "tools/dev/make_golden.py",
                                    "torch": torch.__version__})
    print(f"wrote {len(golden)} tensors, {os.path.getsize(OUT)} bytes to {os.path.normpath(OUT)}")
