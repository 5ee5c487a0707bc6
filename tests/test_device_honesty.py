"""The GPU path kept honest without a GPU (issue 14 item 5): host round trips (``.cpu()``,
``.numpy()``, ``.item()``, ``.tolist()``, ``float(t)``, ``int(t)``, ``bool(t)``, ``.to('cpu')``)
are counted with a ``TorchFunctionMode`` while the scorer and one fit run. On a GPU each of
them is a device-to-host copy and a synchronisation; per batch or per epoch is fine (results
are streamed to the host), per sample is not. So the same work is run twice with the same
number of batches / steps, once with twice the samples per batch: a host round trip inside a
per-sample path shows up as a difference between the two counts."""
from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch.overrides import TorchFunctionMode

from audio_xai_bench import runner
from audio_xai_bench.api import TaskData
from audio_xai_bench.audio import Frontend
from audio_xai_bench.data import materialize
from audio_xai_bench.evaluate import EvalConfig, Scorer
from audio_xai_bench.registry import METHODS, TASKS

SYNC = {"numpy", "item", "tolist", "__float__", "__int__", "__bool__", "__index__"}


class HostRoundTrips(TorchFunctionMode):
    """Counts the calls that copy a device tensor to the host (module docstring).

    CPU stands in for the device, so host copies are told apart the way a GPU would: ``.cpu()``
    and ``.to('cpu')`` return a new tensor (a clone when torch would return the tensor itself
    on the CPU), which is marked as host memory together with everything computed from it;
    reading scalars out of marked tensors is host work and is not counted."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter = Counter()

    @staticmethod
    def _is_host(obj) -> bool:
        return isinstance(obj, torch.Tensor) and getattr(obj, "_axb_host", False)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        to_host = name == "cpu" or (name == "to" and _cpu_target(args, kwargs))
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        from_host = any(self._is_host(a) for a in tensors)
        if not from_host and (to_host or name in SYNC):
            self.counts["to(cpu)" if name == "to" else name] += 1
        out = func(*args, **kwargs)
        if to_host and tensors and out is tensors[0]:
            out = out.clone()  # on a GPU this is a new tensor in host memory
        if to_host or from_host:
            for o in (out if isinstance(out, (tuple, list)) else (out,)):
                if isinstance(o, torch.Tensor):
                    o._axb_host = True
        return out


def _cpu_target(args, kwargs) -> bool:
    dev = kwargs.get("device", args[1] if len(args) > 1 else None)
    return isinstance(dev, (str, torch.device)) and torch.device(dev).type == "cpu"


def test_counter_sees_device_reads_and_not_host_reads():
    x = torch.arange(6.0)
    with HostRoundTrips() as trips:
        [float(v) for v in x]             # per-element reads of a device tensor: 6 syncs
        h = x.cpu()                       # one copy...
        [float(v) for v in h]             # ...then host reads, free
        h.numpy()
    assert trips.counts == Counter({"__float__": 6, "cpu": 1})


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    task = TASKS.get("synth")(profile="small")
    fold = task.folds()[0]
    fe = task.frontend
    data = TaskData(task=task, fold="0", train=materialize(fold.train[:16], fe),
                    valid=materialize(fold.valid[:8], fe), test=materialize(fold.test[:16], fe),
                    frontend=Frontend(fe), seed=0)
    cfg = runner.resolve_classifier_config(task, "small", {"epochs": "1"})
    cache = tmp_path_factory.mktemp("c")
    f, _ = runner.get_classifier(data, cfg, cache, 0, log=lambda *_: None)
    return task, fold, fe, data, f, cache


def _subset(task, fold, fe, data, n_train, n_test):
    def first(split, n):
        return type(split)(**{k: (v[:n] if isinstance(v, (torch.Tensor, list)) else v)
                              for k, v in vars(split).items()})
    return TaskData(task=task, fold="0", train=first(data.train, n_train), valid=data.valid,
                    test=first(data.test, n_test), frontend=data.frontend, seed=0)


def _scorer_trips(setting, method, n_test, batch_size):
    task, fold, fe, data, f, _ = setting
    sub = _subset(task, fold, fe, data, 8, n_test)
    cls = METHODS.get(method)
    ex = cls(cls.resolve_config(task, "small", {}), seed=0, device="cpu")
    ex.fit(sub, f)
    cfg = EvalConfig(batch_size=batch_size, listen=0)
    with HostRoundTrips() as trips:
        Scorer(ex, f, sub, cfg).run()
    return trips.counts


@pytest.mark.parametrize("method", ["slime"])
def test_scorer_has_no_per_sample_host_round_trips(setting, method):
    n = 4
    one = _scorer_trips(setting, method, 2 * n, n)          # 2 batches of n
    two = _scorer_trips(setting, method, 4 * n, 2 * n)      # 2 batches of 2n
    assert sum(one.values()) > 0  # the counter sees the scorer's (legitimate) per-batch copies
    extra = {k: two[k] - one[k] for k in two if two[k] > one[k]}
    assert not extra, (f"host round trips grow with the samples per batch ({method}): {extra}; "
                       f"counts {dict(two)} vs {dict(one)}")


def test_l2i_fit_has_no_per_sample_host_round_trips(setting):
    task, fold, fe, data, f, cache = setting
    counts = []
    for n, bs in ((8, 4), (16, 8)):  # 2 steps per epoch in both
        sub = _subset(task, fold, fe, data, n, 4)
        cls = METHODS.get("l2i")
        cfg = cls.resolve_config(task, "small", {"epochs": "1", "batch_size": str(bs), "K": "8"})
        sub.dictionary, _ = runner.get_dictionary(sub, int(cfg["K"]), 0, cache, cfg,
                                                  log=lambda *_: None)
        ex = cls(cfg, seed=0, device="cpu")
        with HostRoundTrips() as trips:
            ex.fit(sub, f)
        counts.append(trips.counts)
    extra = {k: counts[1][k] - counts[0][k] for k in counts[1] if counts[1][k] > counts[0][k]}
    assert not extra, f"host round trips grow with the batch size in the L2I fit: {extra}"

