"""Name -> object registries for methods, tasks and metrics.

A registry maps a short name to either an object (registered with the ``@register`` decorator)
or a lazy ``"module:Object"`` string that is imported only when asked for. Installed plugins
are found through the entry-point groups ``audio_xai_bench.methods`` / ``.tasks`` / ``.classifiers``,
and a ``package.module:Object`` name is imported directly, so a user's explainer runs without
editing the suite. Unknown names raise a ``KeyError`` that lists the valid ones.
"""
from __future__ import annotations

import importlib
from importlib import metadata
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


def import_object(spec: str) -> Any:
    """Import ``"package.module:Object"`` (or ``package.module.Object``)."""
    if ":" in spec:
        mod_name, _, attr = spec.partition(":")
    else:
        mod_name, _, attr = spec.rpartition(".")
    if not mod_name or not attr:
        raise KeyError(f"not an import path: {spec!r} (expected 'package.module:Object')")
    try:
        module = importlib.import_module(mod_name)
    except ImportError as exc:
        raise KeyError(f"cannot import module {mod_name!r} for {spec!r}: {exc}") from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise KeyError(f"module {mod_name!r} has no attribute {attr!r}") from exc
    return obj


class Registry(Generic[T]):
    """A registry of one kind of object ("method", "task", ...)."""

    def __init__(self, kind: str, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self.group = entry_point_group
        self._entries: dict[str, T | str] = {}
        self._loaded_eps = False

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@REG.register("name")``."""

        def deco(obj: T) -> T:
            self._entries[name] = obj
            try:
                setattr(obj, "registry_name", name)
            except (AttributeError, TypeError):
                pass
            return obj

        return deco

    def add_lazy(self, name: str, spec: str) -> None:
        """Register ``name`` as ``"module:Object"``, imported on first use."""
        self._entries.setdefault(name, spec)

    def _load_entry_points(self) -> None:
        if self._loaded_eps or self.group is None:
            return
        self._loaded_eps = True
        for ep in metadata.entry_points(group=self.group):
            self._entries.setdefault(ep.name, ep.value)

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        self._load_entry_points()
        return name in self._entries

    def get(self, name: str) -> T:
        """The object called ``name``; a ``module:Object`` path is imported directly."""
        self._load_entry_points()
        if name in self._entries:
            obj = self._entries[name]
            if isinstance(obj, str):
                obj = import_object(obj)
                try:
                    setattr(obj, "registry_name", name)
                except (AttributeError, TypeError):
                    pass
                self._entries[name] = obj
            return obj  # type: ignore[return-value]
        if ":" in name:
            obj = import_object(name)
            try:
                # a name inherited from a registered parent class is not this class's name
                if not vars(obj).get("registry_name") if isinstance(obj, type) else \
                        not getattr(obj, "registry_name", None):
                    setattr(obj, "registry_name", name)
            except (AttributeError, TypeError):
                pass
            return obj
        raise KeyError(
            f"unknown {self.kind} {name!r}. Valid {self.kind}s: {', '.join(self.names())}"
            f" (or a 'package.module:Class' path)"
        )


METHODS: Registry[Any] = Registry("method", "audio_xai_bench.methods")
TASKS: Registry[Any] = Registry("task", "audio_xai_bench.tasks")
CLASSIFIERS: Registry[Any] = Registry("classifier", "audio_xai_bench.classifiers")

# Built-in entries are lazy so that `list` and `--help` stay fast and a broken optional method
# cannot stop the others from loading.
for _name, _spec in {
    "l2i": "audio_xai_bench.methods.l2i:L2I",
    "l2i-max": "audio_xai_bench.methods.l2i:L2IMax",
    "random": "audio_xai_bench.methods.random_baseline:RandomExplainer",
    "oracle": "audio_xai_bench.methods.reference:OracleExplainer",
    "anti-oracle": "audio_xai_bench.methods.reference:AntiOracleExplainer",
    "energy": "audio_xai_bench.methods.reference:EnergyExplainer",
    "l2i-bd": "audio_xai_bench.methods.l2i_bd:L2IByDesign",
    "l2i-bd-nopred": "audio_xai_bench.methods.l2i_bd:L2IByDesignNoPred",
    "l2i-posthoc": "audio_xai_bench.methods.l2i_bd:L2IPosthocPredictor",
    "flint": "audio_xai_bench.methods.flint:FLINT",
    "flint-bd": "audio_xai_bench.methods.flint:FLINTByDesign",
    "vibi": "audio_xai_bench.methods.vibi:VIBI",
    "slime": "audio_xai_bench.methods.slime:SLIME",
    "slime-time": "audio_xai_bench.methods.slime:SLIMETime",
    "slime-freq": "audio_xai_bench.methods.slime:SLIMEFreq",
    "apnet": "audio_xai_bench.methods.apnet:APNet",
    "nmf-unsup": "audio_xai_bench.methods.nmf_baselines:UnsupervisedNMF",
    "tdl-nmf": "audio_xai_bench.methods.nmf_baselines:TDLNMF",
    "saliency": "audio_xai_bench.methods.attribution:SaliencyRegions",
    "integrated-gradients": "audio_xai_bench.methods.attribution:IntegratedGradientsRegions",
    "gradcam": "audio_xai_bench.methods.attribution:GradCAMRegions",
    "occlusion": "audio_xai_bench.methods.attribution:OcclusionRegions",
}.items():
    METHODS.add_lazy(_name, _spec)

for _name, _spec in {
    "synth": "audio_xai_bench.tasks.synth:SynthTask",
    "synth-multilabel": "audio_xai_bench.tasks.synth:SynthMultilabelTask",
    "synth-mix": "audio_xai_bench.tasks.synth_mix:SynthMixTask",
    "esc50": "audio_xai_bench.tasks.esc50:ESC50Task",
    "esc10": "audio_xai_bench.tasks.esc50:ESC10Task",
    "sonyc-ust": "audio_xai_bench.tasks.sonyc_ust:SonycUSTTask",
    "openmic": "audio_xai_bench.tasks.openmic:OpenMICTask",
    "csv": "audio_xai_bench.tasks.csv_manifest:CsvTask",
}.items():
    TASKS.add_lazy(_name, _spec)

for _name, _spec in {
    "kumar": "audio_xai_bench.classifiers.kumar:Kumar",
    "yamnet": "audio_xai_bench.classifiers.yamnet:YamnetTorch",
    "yamnet-onnx": "audio_xai_bench.classifiers.yamnet:YamnetOnnx",
}.items():
    CLASSIFIERS.add_lazy(_name, _spec)
