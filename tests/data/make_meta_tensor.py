"""Writes tests/data/meta_tensor.pt: a TorchScript module whose forward(n)
returns a tensor of n floats on PyTorch's "meta" device (shapes, no data).

tch's `Device` has no meta device, and libtorch's `at_device` reports any
device it does not list with tch's code for MPS: tch says such a tensor is on
`Device::Mps`, and moving it to CPU really fails in libtorch ("Cannot copy out
of meta tensor; no data!"). On a machine without MPS it is the one tensor that
reads as on MPS and whose move to CPU fails, so tests/unmovable.rs uses it to
drive the path where moving a tensor to CPU fails, for real.

Regenerate (the file is checked in; torch 2.13.0, as the tests use):

    . scripts/torch-env.sh && python tests/data/make_meta_tensor.py
"""

import os

import torch


class MetaTensor(torch.nn.Module):
    def forward(self, n: int) -> torch.Tensor:
        return torch.zeros(n, device="meta")


here = os.path.dirname(os.path.abspath(__file__))
torch.jit.script(MetaTensor()).save(os.path.join(here, "meta_tensor.pt"))
