"""SAMPLERS' defaults and every place that states them agree: the registry's docstring table,
the sampler table of docs/inpainting.md, configs/sample.yaml's comments, and the study row each default names
as its evidence. Changing a default without its documentation (or the reverse) fails here."""

import csv
import re
from dataclasses import replace
from pathlib import Path

import pytest

from priorpaint.sampling import samplers
from priorpaint.sampling.samplers import (
    DEFAULT_STEPS,
    SAMPLERS,
    resolve_options,
    sampler_schedule,
)
from priorpaint.sampling.time_schedules import count_network_calls

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results" / "inpainting_study"
# symbols the tables use -> SamplerOptions fields
SYMBOLS = {"j": "jump_length", "L": "jump_length", "r": "jump_n_sample", "η": "eta",
           "eta": "eta", "λ": "lambda_", "diffpir.lambda": "lambda_", "σ_n": "sigma_n",
           "sigma_n": "sigma_n", "ζ": "zeta", "zeta": "zeta", "U": "inner_loops",
           "inner_loops": "inner_loops", "jump_length": "jump_length",
           "jump_n_sample": "jump_n_sample"}


def default_steps(name: str) -> int:
    return SAMPLERS[name].defaults.steps or DEFAULT_STEPS


def default_calls(name: str, chain: int = 1000) -> int:
    """Network calls of ``name``'s defaults on a ``chain``-step prior (the shipped one's)."""
    options = replace(resolve_options(name), steps=default_steps(name))
    return count_network_calls(sampler_schedule(name, options, options.steps))


def stated_values(text: str) -> dict[str, float]:
    """``key=value`` pairs of a defaults cell (``j=10``, ```eta`=0.85``, ``L=1``...)."""
    pairs = re.findall(r"`?([\w.]+|[ηλζ]|σ_n)`?\s*=\s*(?:[A-Za-z]=)?([0-9]+(?:\.[0-9]+)?)", text)
    return {SYMBOLS[k]: float(v) for k, v in pairs if k in SYMBOLS}


def check(name: str, cell: str, where: str) -> None:
    steps = re.search(r"(\d+) steps", cell)
    assert steps, f"{where}: no step count for {name}"
    assert int(steps.group(1)) == default_steps(name), f"{where}: {name}'s steps"
    resolved = resolve_options(name)
    for field, value in stated_values(cell).items():
        assert getattr(resolved, field) == pytest.approx(value), f"{where}: {name}'s {field}"


def docstring_rows() -> dict[str, str]:
    """Sampler name -> its defaults column (continuation lines joined) of the docstring table."""
    lines = samplers.__doc__.splitlines()
    rule = next(i for i, line in enumerate(lines) if line.startswith("====="))
    widths = [len(c) for c in lines[rule].split("  ")]
    start = widths[0] + 2
    cells, name = {}, None
    for line in lines[rule + 3:]:
        if line.startswith("====="):
            break
        name = line[:widths[0]].strip() or name
        cells[name] = cells.get(name, "") + " " + line[start:start + widths[1]]
    return cells


def test_the_registry_docstring_table_states_the_defaults():
    rows = docstring_rows()
    assert set(rows) == set(SAMPLERS)
    for name, cell in rows.items():
        check(name, cell, "samplers.py docstring")


def test_docs_sampler_table_states_the_defaults_and_their_calls():
    text = (REPO / "docs" / "inpainting.md").read_text()
    seen = set()
    for row in re.findall(r"^\s*\| (`\w+`(?:, `\w+`)*) \| (.*)$", text, re.M):
        names = re.findall(r"`(\w+)`", row[0])
        if not set(names) <= set(SAMPLERS):
            continue
        cells = row[1].split(" | ")
        for name in names:
            check(name, cells[0], "docs/inpainting.md sampler table")
            calls = re.search(r"= (\d+) \|?\s*$", row[1])
            assert calls and int(calls.group(1)) == default_calls(name), f"docs/inpainting.md: {name} calls"
            seen.add(name)
    assert seen == set(SAMPLERS)


def test_sample_yaml_comments_state_the_defaults():
    text = (REPO / "configs" / "sample.yaml").read_text()
    for name in SAMPLERS:
        line = re.search(rf"^#\s+{name}\s+(.*(?:\n#\s{{6,}}.*)*)", text, re.M)
        assert line, f"sample.yaml: no comment line for {name}"
        if re.search(r"\d+ steps", line.group(1)):
            check(name, line.group(1), "sample.yaml comment")
        calls = re.search(r"-> (\d+) calls", line.group(1))
        if calls:
            assert int(calls.group(1)) == default_calls(name), f"sample.yaml: {name}'s calls"
    auto = re.search(r"^steps: auto[^(]*\(([^)]*)\)", text, re.M)
    stated = re.findall(r"([\w/]+) (\d+)", auto.group(1).replace("#", " "))
    assert {n for names, _ in stated for n in names.split("/")} == set(SAMPLERS)
    for names, value in stated:
        for name in names.split("/"):
            assert default_steps(name) == int(value), f"sample.yaml steps: auto, {name}"


def test_every_default_names_a_study_row_that_ran_it():
    doc = samplers.__doc__
    for name in SAMPLERS:
        bullet = re.search(rf"^- {name}: (.*(?:\n  .*)*)", doc, re.M)
        assert bullet, f"samplers.py docstring: {name}'s default names no evidence"
        row = re.search(r"``(\w+\.csv): ([\w-]+), (\d+)``", bullet.group(1))
        if row is None:
            assert "no study row" in bullet.group(1)
            continue
        file, label, calls = row.groups()
        with open(RESULTS / file, newline="") as f:
            found = [r for r in csv.DictReader(f)
                     if r["sampler"] == label and int(r["calls"]) == int(calls)]
        assert found, f"{file} has no row {label}, {calls}"
        assert int(calls) == default_calls(name), f"{name}: the row's calls are not the default's"
        assert all(f"steps={default_steps(name)}" in r["settings"].split() for r in found)
