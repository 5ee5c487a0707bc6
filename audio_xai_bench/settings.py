"""Declared settings: type, allowed values and range of every method, classifier and scorer
setting, checked before any work is done.

A setting's **type** is the type of its default (bool, int, float, str, tuple of str / float,
or ``None`` for "unset"); its **allowed values / range** come from a :class:`Rule`. Rules are
declared once per setting name in :data:`COMMON_RULES` (the suite's shared vocabulary: the
same key means the same thing in every method) and a class may add or override rules in its
``setting_rules`` class attribute. Every string-valued setting must have declared choices (a
test checks all registered methods), so a typo such as ``--set attention=nonsense`` is refused
with the allowed values instead of silently meaning another setting.

Why not pydantic: settings arrive as CLI strings (``K=abc``, ``hidden_layers=B4,B5``) whose
type comes from a per-task, per-profile default; the rules below are the declarations the
``list --method M`` table is generated from, and a model class per method and profile would
only restate them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping


class SettingsError(ValueError, KeyError):
    """A setting that is unknown, does not parse or is out of its declared range (a usage
    error). A ``KeyError`` too, so callers that caught unknown keys as such still do."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Rule:
    """Allowed values of one setting. ``choices``: the allowed strings (for tuples: of each
    item); ``ge``/``gt``/``le``/``lt``: numeric bounds (for tuples: of each item);
    ``int_ok``: a string setting that also accepts a non-negative integer (e.g. a count);
    ``nonempty``: tuples must hold at least one item; ``doc``: one line for ``list``."""

    choices: tuple[str, ...] | None = None
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    int_ok: bool = False
    nonempty: bool = False
    min_items: int = 0  # tuples: at least this many (distinct) items
    increasing: bool = False  # tuples: strictly increasing
    doc: str = ""

    def describe(self) -> str:
        parts = []
        if self.choices:
            parts.append("|".join(self.choices) + ("|<int>" if self.int_ok else ""))
        bounds = []
        if self.ge is not None:
            bounds.append(f">= {self.ge:g}")
        if self.gt is not None:
            bounds.append(f"> {self.gt:g}")
        if self.le is not None:
            bounds.append(f"<= {self.le:g}")
        if self.lt is not None:
            bounds.append(f"< {self.lt:g}")
        if bounds:
            parts.append(", ".join(bounds))
        return "; ".join(parts)


POSITIVE_INT = Rule(ge=1)
NON_NEGATIVE = Rule(ge=0)
FRACTION = Rule(ge=0, lt=1)

#: The shared vocabulary. Numeric settings not named here must be finite and >= 0.
COMMON_RULES: dict[str, Rule] = {
    # training
    "epochs": Rule(ge=0, doc="training epochs (0: the model stays at its initialisation)"),
    "batch_size": POSITIVE_INT,
    "lr": Rule(gt=0, doc="Adam learning rate"),
    "dropout": FRACTION,
    "select": Rule(choices=("valid", "last"),
                   doc="model selection: best validation epoch, or the last one"),
    "width": Rule(gt=0), "psi_width": Rule(gt=0),
    "head_mid": POSITIVE_INT,
    "pos_weight": Rule(gt=0, doc="BCE positive weight per class (multilabel)"),
    # decompositions
    "K": POSITIVE_INT, "n_components": POSITIVE_INT, "n_prototypes": POSITIVE_INT,
    "nmf_iter": POSITIVE_INT, "project_iter": POSITIVE_INT, "nmf_mu": NON_NEGATIVE,
    "hidden_layers": Rule(choices=("B1", "B2", "B3", "B4", "B5", "B6"), nonempty=True,
                          doc="hidden blocks of f read by the interpreter"),
    "relevance_norm": Rule(choices=("paper", "code"),
                           doc="r = v / max|v| (paper) or v / max v (authors' code)"),
    "attention": Rule(choices=("auto", "per_class", "shared"),
                      doc="auto = per-class attention for multilabel tasks (paper)"),
    "fid_schedule": Rule(choices=("code", "constant"),
                         doc="fidelity weight 0.5 then 1.0 (authors' code) or constant"),
    "fid_switch_epoch": NON_NEGATIVE,
    "representation": Rule(choices=("log1p", "sqrt_mel")),
    "attr_pool": Rule(choices=("max", "avg3_fc")),
    # region methods
    "output": Rule(choices=("logit", "prob"), doc="score explained: logit or probability"),
    "n_freq": POSITIVE_INT, "n_time": POSITIVE_INT, "n_samples": POSITIVE_INT,
    "n_steps": POSITIVE_INT, "internal_batch_size": POSITIVE_INT, "chunk": POSITIVE_INT,
    "method": Rule(choices=("gausslegendre", "riemann_left", "riemann_right", "riemann_middle",
                            "riemann_trapezoid"), doc="integrated-gradients quadrature"),
    # scorer (eval.*)
    "taus": Rule(ge=-1, lt=1, nonempty=True, doc="relevance thresholds τ of FF"),
    "threshold": Rule(gt=0, lt=1, choices=("per_class",),
                      doc="f's outputs -> multilabel truth: a probability, per_class, or one per class"),
    "baseline_count": Rule(choices=("mean", "class_mean", "per_sample"), int_ok=True,
                           doc="components the random baseline removes"),
    "baseline_pool": Rule(choices=("outside", "all"), doc="random baseline draws from"),
    "listen": NON_NEGATIVE, "listen_tau": Rule(ge=-1, lt=1),
    "keep_bytes": Rule(ge=0, doc="bytes of explanations spilled to disk for the random "
                                  "baseline's second pass; past it they are recomputed"),
    "pair_batch": Rule(ge=1, doc="(clip, class) pairs explained and scored together "
                                 "(default: batch_size); bounds the scorer's memory"),
    "forward_batch": Rule(ge=1, doc="modified inputs per forward pass of the explained model "
                                    "(memory only; not part of the cell's hash)"),
    "removal": Rule(choices=("subtract", "fill"), doc="removal operator of FF and its baselines"),
    "curve_removal": Rule(choices=("fill", "subtract"),
                          doc="removal operator of the deletion / insertion curves"),
    "fill_quantile": Rule(ge=0, le=1, doc="background level of 'fill': quantile over frames"),
    "budgets": Rule(gt=0, le=1, nonempty=True, min_items=2, increasing=True,
                    doc="log1p-mass shares of the curves (at least 2: their area is reported)"),
    "curve_draws": NON_NEGATIVE,
    "baseline_unmatched": Rule(choices=("nan", "cap"),
                               doc="count baseline short of components: NaN, or remove what there is"),
}


def _fail(owner: str, key: str, value: Any, why: str) -> SettingsError:
    return SettingsError(f"setting {key!r} of {owner}: {value!r} {why}")


def _is_int_string(v: str) -> bool:
    return v.strip().lstrip("+").isdigit()


def _parse_scalar(owner: str, key: str, ref: Any, value: str, rule: Rule | None) -> Any:
    if isinstance(ref, bool):
        low = value.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise _fail(owner, key, value, "is not a boolean (true/false)")
    if isinstance(ref, (int, float)) or ref is None:
        if rule is not None and rule.choices and value in rule.choices:
            return value  # a number-or-word setting (e.g. threshold=per_class)
        try:
            if ref is None and value.strip().lstrip("+-").isdigit():
                return int(value)  # a setting with no default (e.g. pair_batch): "4" is 4
            num = int(value) if isinstance(ref, int) else float(value)
        except ValueError:
            kind = "an integer" if isinstance(ref, int) else "a number"
            if ref is None:
                return value
            raise _fail(owner, key, value, f"is not {kind}") from None
        return num
    return value


def parse_value(owner: str, key: str, ref: Any, value: Any, rule: Rule | None = None) -> Any:
    """Parse a ``--set`` string to the type of the default ``ref`` it replaces (tuples from
    comma lists), naming the key when it does not parse."""
    if not isinstance(value, str):
        return value
    if isinstance(ref, (list, tuple)) or ("," in value and not isinstance(ref, str)):
        if isinstance(ref, (list, tuple)):
            item = ref[0] if ref else ""
        else:
            item = 0.0 if ref is None else ref
        parts = [p.strip() for p in value.split(",") if p.strip()]
        return tuple(_parse_scalar(owner, key, item, p, rule) for p in parts)
    return _parse_scalar(owner, key, ref, value, rule)


def check_value(owner: str, key: str, value: Any, rule: Rule | None) -> None:
    """Raise :class:`SettingsError` if ``value`` breaks its rule (or is a non-finite or
    negative number where no rule is declared)."""
    rule = rule or NON_NEGATIVE
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if isinstance(value, (list, tuple)) and rule.nonempty and not items:
        raise _fail(owner, key, value, "must not be empty")
    if isinstance(value, (list, tuple)) and len(set(items)) < rule.min_items:
        raise _fail(owner, key, value, f"must hold at least {rule.min_items} distinct values")
    if isinstance(value, (list, tuple)) and rule.increasing and any(
            not (isinstance(a, (int, float)) and isinstance(b, (int, float)) and a < b)
            for a, b in zip(items, items[1:])):
        raise _fail(owner, key, value, "must be strictly increasing")
    for v in items:
        if v is None or isinstance(v, bool):
            continue
        if isinstance(v, str):
            if rule.choices and v in rule.choices:
                continue
            if rule.int_ok and _is_int_string(v):
                continue
            allowed = "|".join(rule.choices or ()) + ("|<int>" if rule.int_ok else "")
            raise _fail(owner, key, v, f"is not allowed; allowed: {allowed or '(no strings)'}")
        if isinstance(v, (int, float)):
            if not math.isfinite(v):
                raise _fail(owner, key, v, "is not finite")
            for bound, ok, text in ((rule.ge, lambda b: v >= b, ">="), (rule.gt, lambda b: v > b, ">"),
                                    (rule.le, lambda b: v <= b, "<="), (rule.lt, lambda b: v < b, "<")):
                if bound is not None and not ok(bound):
                    raise _fail(owner, key, v, f"is out of range: must be {text} {bound:g}")


def resolve(owner: str, base: Mapping[str, Any], overrides: Mapping[str, Any],
            rules: Mapping[str, Rule] | None = None) -> dict[str, Any]:
    """``base`` updated with parsed ``overrides``, every value checked. Unknown override keys
    raise :class:`SettingsError` listing the valid ones."""
    rules = {**COMMON_RULES, **(rules or {})}
    unknown = sorted(set(overrides) - set(base))
    if unknown:
        raise SettingsError(f"unknown setting(s) {unknown} for {owner}; valid keys: "
                            f"{', '.join(sorted(base))}")
    cfg = dict(base)
    for k, v in overrides.items():
        cfg[k] = parse_value(owner, k, base[k], v, rules.get(k))
    for k, v in cfg.items():
        check_value(owner, k, v, rules.get(k))
    return cfg


def undeclared_strings(defaults: Mapping[str, Any], rules: Mapping[str, Rule] | None = None
                       ) -> list[str]:
    """Keys whose default is a string (or tuple of strings) without declared choices."""
    rules = {**COMMON_RULES, **(rules or {})}
    out = []
    for k, v in defaults.items():
        items = list(v) if isinstance(v, (list, tuple)) else [v]
        if any(isinstance(i, str) for i in items) and not (rules.get(k) and rules[k].choices):
            out.append(k)
    return out


def table(defaults: Mapping[str, Any], rules: Mapping[str, Rule] | None = None) -> list[tuple[str, str, str, str]]:
    """(key, type, default, allowed) rows for ``list --method M`` and the docs."""
    rules = {**COMMON_RULES, **(rules or {})}
    rows = []
    for k, v in sorted(defaults.items()):
        typ = ("tuple" if isinstance(v, (list, tuple)) else "none" if v is None
               else type(v).__name__)
        rule = rules.get(k)
        allowed = rule.describe() if rule else ">= 0"
        doc = rule.doc if rule else ""
        rows.append((k, typ, repr(v), allowed + (f"  ({doc})" if doc else "")))
    return rows
