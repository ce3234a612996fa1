"""The score registry (denseood/scores/names.py): every record is complete and agrees with its function, the
value ranges and orientation hold, help text reads the records, and no module outside the record module writes a
score name as a default (the default is ``DEFAULT_SCORE``, written once)."""
from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import math
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

import denseood
import denseood.scores as scores
from denseood.errors import ConfigError
from denseood.scores import DEFAULT_SCORE, OUTPUT_KINDS, SCORES, ScoreRecord, anomaly_score, get_score
from denseood.scores.names import score_help

PKG = Path(denseood.__file__).parent
SCORE_MODULES = ("logit_scores", "mask_scores", "fitted")


@pytest.mark.parametrize("name", list(SCORES))
def test_every_record_field_is_set_and_agrees_with_the_function(name):
    rec = SCORES[name]
    assert rec.name == name
    for f in dataclasses.fields(ScoreRecord):
        assert hasattr(rec, f.name), f.name
    assert rec.help.strip() and "\n" not in rec.help
    assert isinstance(rec.higher_is_anomalous, bool) and isinstance(rec.features, bool)
    assert rec.output_kinds and rec.output_kinds <= set(OUTPUT_KINDS)
    fn = rec.fn
    assert callable(fn) and fn.__module__.startswith("denseood.scores.") and fn.__name__ == rec.function.split(".")[1]
    params = inspect.signature(fn).parameters
    assert next(iter(params)) == "logits"
    assert ("features" in params) == rec.features, "record and function disagree on features"
    assert ("queries" in params) == rec.queries, "record and function disagree on query outputs"
    assert ("stats" in params) == bool(rec.stats), "record and function disagree on fitted statistics"
    if rec.stats:
        fit = getattr(scores, rec.fit_name)
        assert inspect.isfunction(fit) and list(inspect.signature(fit).parameters)[:2] == ["model", "loader"]
        written = inspect.getsource(fit)
        assert all(f'"{k}"' in written for k in rec.stats), f"{rec.fit_name} does not write {rec.stats}"


def test_every_score_function_has_a_record():
    """A function ``name(logits, ...)`` in a score module without a record would be a score nobody can name."""
    registered = {rec.function for rec in SCORES.values()}
    for mod_name in SCORE_MODULES:
        mod = __import__(f"denseood.scores.{mod_name}", fromlist=["_"])
        for attr, obj in vars(mod).items():
            if inspect.isfunction(obj) and obj.__module__ == mod.__name__ and not attr.startswith("_") \
                    and next(iter(inspect.signature(obj).parameters), None) == "logits" and attr != "check_logits":
                assert f"{mod_name}.{attr}" in registered, f"{mod_name}.{attr} has no ScoreRecord in scores/names.py"


def test_records_refuse_incomplete_or_inconsistent_fields():
    ScoreRecord("x", "logit_scores.msp", "help")  # the minimal record is valid
    for bad in (dict(name="X"), dict(function="msp"), dict(stats=("k",)), dict(fit="fitted.fit_sml"),
                dict(output_kinds=frozenset({"boxes"})), dict(output_kinds=frozenset()),
                dict(value_range=(1.0, 0.0)), dict(value_range=(0.0, math.inf))):
        with pytest.raises(ValueError):
            ScoreRecord(**{"name": "x", "function": "logit_scores.msp", "help": "help", **bad})


def test_default_score_is_registered():
    assert DEFAULT_SCORE in SCORES and get_score(DEFAULT_SCORE).output_kinds == set(OUTPUT_KINDS)


def _logit_scores() -> list[str]:
    return [n for n, r in SCORES.items() if not r.needs]


@pytest.mark.parametrize("name", [n for n, r in SCORES.items() if r.value_range is not None])
def test_values_stay_in_the_recorded_range(name, rng):
    lo, hi = SCORES[name].value_range
    for c, scale in ((2, 1.0), (19, 30.0), (2980, 0.01), (2980, 1e4)):
        x = torch.from_numpy(rng.standard_normal((1, c, 3, 4)) * scale).float()
        x[0, :, 0, 0] = 0.0  # a uniform prediction
        x[0, 0, 0, 1] = 1e4  # a certain one
        v = anomaly_score(name, x)
        assert float(v.min()) >= lo - 1e-6 and float(v.max()) <= hi + 1e-6, (c, scale, float(v.min()), float(v.max()))


@pytest.mark.parametrize("name", _logit_scores())
def test_orientation_matches_the_record(name):
    """Equal logits (or class scores s_k all 0: rejected by every class) against one confident class."""
    peaked, unsure = torch.zeros(1, 5, 1, 1), torch.zeros(1, 5, 1, 1)
    peaked[0, 2] = 10.0 if "logits" in SCORES[name].output_kinds else 1.0
    more = anomaly_score(name, unsure).item() > anomaly_score(name, peaked).item()
    assert more == SCORES[name].higher_is_anomalous


def test_unknown_score_suggests_close_names_and_lists_all():
    with pytest.raises(ConfigError) as e:
        get_score("jds")
    msg = str(e.value)
    assert "'jds'" in msg and "did you mean jsd?" in msg and all(n in msg for n in SCORES)
    with pytest.raises(ConfigError, match="valid scores"):
        get_score(None)


def test_package_exports_resolve_to_functions():
    for sub in ("logit_scores", "mask_scores", "fitted", "divergence"):  # a submodule import must not shadow a name
        __import__(f"denseood.scores.{sub}")
    for name in scores.__all__:
        obj = getattr(scores, name)
        assert not isinstance(obj, types.ModuleType), f"denseood.scores.{name} is a module"
    assert scores.jsd is SCORES["jsd"].fn


def test_names_and_registry_functions_import_no_torch():
    code = ("import sys\nimport denseood.scores as s\ns.parse_scores('jsd,msp'); s.score_help('x')\n"
            "print('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "False"


def test_score_options_help_lists_every_score():
    from denseood import cli

    def options(parser, where):  # (where, action) of every option, sub-verbs (submit oodis|smiyc) included
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from options(sub, f"{where} {name}")
            yield where, action

    _, verbs = cli.build_parser()
    seen = []
    for verb, parser in verbs.items():
        for where, action in options(parser, verb):
            if "--score" in action.option_strings:
                seen.append(where)
                assert all(n in action.help for n in SCORES), where
                assert action.default in (None, DEFAULT_SCORE), where
    assert {"eval", "segment", "train-prompter", "submit oodis", "submit smiyc"} <= set(seen)
    assert score_help("x", default=True).endswith(f"default {DEFAULT_SCORE})")


# ------------------------------------------------------------------------------ default written once
def _default_literals(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, value) of string constants used as defaults: parameter defaults, ``default=`` keywords,
    annotated class fields, ``x or "..."``, ``d.get(k, "...")`` (inside tuples/lists too)."""
    found: list[tuple[int, ast.AST]] = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            found += [(d.lineno, d) for d in [*node.args.defaults, *node.args.kw_defaults] if d is not None]
        elif isinstance(node, ast.keyword) and node.arg == "default":
            found.append((node.value.lineno, node.value))
        elif isinstance(node, ast.ClassDef):
            found += [(s.lineno, s.value) for s in node.body if isinstance(s, ast.AnnAssign) and s.value is not None]
        elif isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or):
            found += [(v.lineno, v) for v in node.values[1:]]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
                and len(node.args) == 2:
            found.append((node.args[1].lineno, node.args[1]))
    out = []
    for line, value in found:
        for sub in ast.walk(value):
            if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                out.append((line, sub.value))
    return out


def test_default_literal_checker_sees_each_form():
    src = ('def f(a="jsd", *, b=("jsd",)): pass\nclass O:\n    s: str = "jsd"\n'
           'p.add_argument("--score", default="jsd")\nx = y or "jsd"\nm.get("score", "jsd")\nz = "jsd"\n')
    assert sorted(line for line, v in _default_literals(ast.parse(src)) if v == "jsd") == [1, 1, 3, 4, 5, 6]


def test_no_score_name_is_a_default_outside_the_record_module():
    record_module = PKG / "scores" / "names.py"
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        if path == record_module:
            continue
        for line, value in _default_literals(ast.parse(path.read_text(encoding="utf-8"))):
            if value in SCORES:
                bad.append(f"{path.relative_to(PKG.parent)}:{line}: default {value!r}")
    assert not bad, "write DEFAULT_SCORE (denseood.scores.names) instead of a score name:\n" + "\n".join(bad)
