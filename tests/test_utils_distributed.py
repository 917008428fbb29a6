# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""medfuse.utils.distributed and medfuse.utils.paths.safe_file_name."""

import torch

from medfuse.utils import is_main_process, safe_file_name, unwrap_module
from medfuse.workflows import MCDropoutInferer


class _HasModuleAttribute(torch.nn.Module):
    """Not a wrapper: a network whose child happens to be called ``module``."""

    def __init__(self):
        super().__init__()
        self.module = torch.nn.Linear(2, 2)

    def forward(self, x):
        return self.module(x) * 2


def test_unwrap_module():
    net = torch.nn.Linear(2, 2)
    assert unwrap_module(net) is net
    assert unwrap_module(torch.nn.DataParallel(net)) is net
    assert unwrap_module(torch.nn.DataParallel(torch.nn.DataParallel(net))) is net
    own = _HasModuleAttribute()
    assert unwrap_module(own) is own
    assert unwrap_module("not a module") == "not a module"


def test_inferer_unwraps_data_parallel():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 3))
    x = torch.rand(2, 4)
    torch.manual_seed(1)
    wrapped = MCDropoutInferer(samples=3)(x, torch.nn.DataParallel(net))
    torch.manual_seed(1)
    plain = MCDropoutInferer(samples=3)(x, net)
    assert set(wrapped) == {"pred", "entropy", "mutual_info"}
    for k in plain:
        torch.testing.assert_close(wrapped[k], plain[k])


def test_is_main_process_without_process_group():
    assert is_main_process() is True


def test_safe_file_name():
    assert safe_file_name("COVID-19 / viral") == "COVID-19_viral"
    assert safe_file_name("..") == "x" and safe_file_name("a.b+c") == "a.b+c" and safe_file_name(3) == "3"
