"""The README's and the documentation's commands compose the run they describe.

The ``train.py`` and ``sample.py`` commands are read out of README.md and every page of
docs/ (```bash blocks, continuation lines joined, shell variables set in the same block
expanded), split as the shell splits them, and composed with Hydra's compose API through
``compose_config`` (what train.py composes: no rewriting of the command line; sample.py's
options are then parsed as sample.py parses them), so this test breaks when a page and the
configs drift apart.
"""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from priorpaint.lightning.launch import compose_config

REPO = Path(__file__).resolve().parents[1]
SHELL_OPERATORS = {"&&", "||", ";", "|", ">"}
# README.md and the documentation site's pages (docs/results/ holds result tables, not pages)
PAGES = [REPO / "README.md"] + sorted(p for p in (REPO / "docs").rglob("*.md")
                                      if "results" not in p.relative_to(REPO / "docs").parts)
ASSIGNMENT = re.compile(r"^([A-Z_][A-Z0-9_]*)=(\"[^\"]*\"|'[^']*'|\S*)\s*(#.*)?$")


def _bash_lines(text: str) -> list[str]:
    """Every command of a page's ```bash blocks, continuation lines joined, and ``$NAME`` of
    an assignment earlier in the same block (``Q="data=digits ..."``) replaced by its value."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        names: dict[str, str] = {}
        for line in block.replace("\\\n", " ").splitlines():
            assigned = ASSIGNMENT.match(line.strip())
            if assigned:
                names[assigned.group(1)] = shlex.split(assigned.group(2))[0] \
                    if assigned.group(2) else ""
                continue
            for name, value in names.items():
                line = line.replace("$" + name, value)
            lines.append(line)
    return lines


def _overrides_after(tokens: list[str], program: str) -> list[list[str]]:
    """The arguments of each ``program`` call in a shell-split command line."""
    found = []
    for i, token in enumerate(tokens):
        if token == program or token.endswith("/" + program):
            args = []
            for arg in tokens[i + 1:]:
                if arg in SHELL_OPERATORS:
                    break
                args.append(arg.replace("<run>", "run"))   # the pages' placeholder
            found.append(args)
    return found


def page_commands(page: Path, program: str) -> list[list[str]]:
    """The argument lists of ``program`` (train.py or sample.py) on one page."""
    commands = []
    for line in _bash_lines(page.read_text()):
        tokens = shlex.split(line, comments=True)
        commands += _overrides_after(tokens, program)
        for token in tokens:   # scripts/slurm/render.py ... TRAIN_ARGS="..." (train.py's args)
            if program == "train.py" and token.startswith("TRAIN_ARGS="):
                strategy = [t for t in tokens if t.startswith("STRATEGY=")]
                trainer = strategy[0].split("=", 1)[1] if strategy else "ddp"
                commands.append([f"trainer={trainer}",
                                 *shlex.split(token.split("=", 1)[1])])
    return commands


def readme_train_commands() -> list[list[str]]:
    return page_commands(REPO / "README.md", "train.py")


def all_commands(program: str) -> list[tuple[str, list[str]]]:
    """(first page, arguments) of each distinct ``program`` command of README.md and docs/."""
    found: dict[tuple[str, ...], str] = {}   # a command on several pages is checked once
    for page in PAGES:
        for args in page_commands(page, program):
            found.setdefault(tuple(args), page.relative_to(REPO).as_posix())
    return [(page, list(args)) for args, page in found.items()]


def _choice(args: list[str], group: str) -> str | None:
    return next((a.split("=", 1)[1] for a in args if a.startswith(group + "=")), None)


def _is_quickstart(args: list[str]) -> bool:
    return _choice(args, "experiment") in (None, "quickstart")


COMMANDS = readme_train_commands()
# train.yaml's default preset: a command that names no experiment= is the quickstart
QUICKSTART = [c for c in COMMANDS if _is_quickstart(c)]
TRAIN = all_commands("train.py")
SAMPLE = all_commands("sample.py")


def _expect(cfg, given: set[str], expected: dict) -> None:
    """Each dotted key of ``expected`` has its value in ``cfg``, unless the command set it."""
    from omegaconf import OmegaConf

    for key, value in expected.items():
        if key in given:
            continue
        got = OmegaConf.select(cfg, key)
        got = list(got) if OmegaConf.is_list(got) else got
        assert got == (pytest.approx(value) if isinstance(value, float) else value), key


def test_the_readme_has_the_commands_this_test_checks():
    assert ["run_dir=outputs/quickstart"] in QUICKSTART   # the set-up command
    assert any("model=im64" in c and "trainer=gpu" in c and "data=folder" in c
               for c in COMMANDS)                     # quickstart 2: your own images, a GPU
    assert any("ckpt=runs/scans/checkpoints/last.ckpt" in c   # ... and its inpainting
               for page, c in SAMPLE if page == "README.md")
    pages = {page for page, _ in TRAIN}
    assert {"docs/training.md", "docs/cluster.md", "docs/data.md"} <= pages, pages
    assert [] in [c for _, c in TRAIN]                 # `python train.py` (docs/training.md)
    assert any("trainer=ddp" in c and "model=adm256" in c for _, c in TRAIN)
    assert len(TRAIN) >= 20 and len(SAMPLE) >= 15, (len(TRAIN), len(SAMPLE))


@pytest.mark.parametrize("page,args", [(p, c) for p, c in TRAIN if not _is_quickstart(c)],
                         ids=lambda x: x if isinstance(x, str) else " ".join(x)[:80])
def test_train_command_gets_its_groups_defaults_not_the_quickstarts(page, args):
    cfg = compose_config(args)
    given = {a.split("=", 1)[0] for a in args}
    experiment = _choice(args, "experiment")
    if experiment != "none":   # a preset: its own values, whatever they are, not the quickstart's
        preset = OmegaConf.load(REPO / "configs" / "experiment" / f"{experiment}.yaml")
        _expect(cfg, given, {"trainer.max_steps": preset.trainer.max_steps,
                             "trainer.max_time": preset.trainer.max_time,
                             "module.optimizer.lr": preset.module.optimizer.lr,
                             "module.ema.rates": preset.module.ema.rates})
        return
    # experiment=none: train.yaml's own defaults, a real run, no time cap
    _expect(cfg, given, {"trainer.max_time": None, "trainer.max_steps": 500000,
                         "module.optimizer.lr": 1.0e-4, "module.ema.rates": "0.9999",
                         "module.ema.power": 0.6666667, "module.lr_schedule.warmup_steps": 0,
                         "module.lr_schedule.decay": "none"})
    if not _choice(args, "diffusion"):
        assert cfg.diffusion.schedule == "linear"  # diffusion=linear1000, train.yaml's default
    trainer = _choice(args, "trainer") or "cpu"
    precision = {"cpu": "32-true", "gpu": "bf16-mixed", "ddp": "bf16-mixed",
                 "fsdp": "bf16-mixed"}[trainer]
    _expect(cfg, given, {"trainer.precision": precision})
    assert cfg.data.source == (_choice(args, "data") or "digits")
    if _choice(args, "model") == "im64":
        assert cfg.model.model_channels == 128 and list(cfg.model.channel_mult) == [1, 2, 3, 4]
    if "data.urls" in given:
        assert "{000000.." in str(cfg.data.urls)   # the brace range reaches the data module


@pytest.mark.parametrize("page,args", [(p, c) for p, c in TRAIN if _is_quickstart(c)],
                         ids=lambda x: x if isinstance(x, str) else " ".join(x)[:80] or "(none)")
def test_the_quickstart_keeps_its_settings(page, args):
    cfg = compose_config(args)
    given = {a.split("=", 1)[0] for a in args}
    _expect(cfg, given, {
        "data.source": "digits", "data.image_size": 16, "data.channels": 1,
        "model.model_channels": 32, "model.channel_mult": [1, 2, 2],
        "diffusion.schedule": "cosine", "diffusion.steps": 1000,
        "trainer.accelerator": "cpu", "trainer.precision": "bf16-mixed",
        "trainer.max_steps": 3000, "trainer.max_time": "00:00:10:00",
        "module.optimizer.lr": 1.0e-3, "module.lr_schedule.warmup_steps": 200,
        "module.ema.rates": "0.999", "module.ema.power": 0.75,
        "callbacks.sample_grid.every_n_steps": 1000})


@pytest.mark.parametrize("page,args", SAMPLE,
                         ids=lambda x: x if isinstance(x, str) else " ".join(x)[:80] or "(none)")
def test_sample_command_composes_and_its_options_parse(page, args):
    """Every key exists in sample.yaml (Hydra refuses others), the options are ones sample.py
    accepts (``RunOptions`` checks them when made) and a generated mask kind is one it knows."""
    from priorpaint.masks import parse_mask_spec
    from priorpaint.sampling.options import RunOptions

    cfg = compose_config(args, config_name="sample")
    options = RunOptions.from_config(cfg)
    mask = options.mask
    if mask and "/" not in mask and "." not in mask:   # a generator, not a file or folder
        parse_mask_spec(mask)


def test_python_train_py_is_the_quickstart_by_hydras_own_defaults(tmp_path):
    """No command-line rewriting: train.yaml's defaults list says what ``python train.py``
    runs, and ``--cfg job`` prints it (the quickstart, every setting of it)."""
    assert "argv" not in (REPO / "train.py").read_text()
    assert "experiment: quickstart" in (REPO / "configs" / "train.yaml").read_text()
    done = subprocess.run([sys.executable, "train.py", "--cfg", "job"], cwd=REPO,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert done.returncode == 0, done.stderr
    shown = yaml.safe_load(done.stdout)
    assert shown["trainer"]["max_time"] == "00:00:10:00" and shown["trainer"]["max_steps"] == 3000
    assert shown["module"]["optimizer"]["lr"] == 1.0e-3 and shown["model"]["channel_mult"] == [1, 2, 2]
    assert shown["diffusion"]["schedule"] == "cosine"
    assert OmegaConf.to_container(compose_config([])) == shown   # the same composition
    tweaked = compose_config(["trainer.max_steps=7", "num_threads=1"])   # keys tweak it
    assert tweaked.trainer.max_steps == 7 and tweaked.module.optimizer.lr == 1.0e-3


def _leaves(node, prefix=""):
    """Dotted keys of every leaf of a plain config tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key != "defaults":
                yield from _leaves(value, f"{prefix}{key}.")
    else:
        yield prefix[:-1]


@pytest.mark.parametrize("experiment", ["mnist32", "photos64"])
def test_a_preset_replaces_the_quickstart_and_inherits_none_of_its_keys(experiment):
    """``experiment=X`` takes the quickstart's place in the defaults list: every key the
    quickstart sets has X's value where X sets it, else train.yaml's and X's groups' own
    (what ``experiment=none`` with X's groups gives), never the quickstart's."""
    folder = REPO / "configs" / "experiment"
    quick = OmegaConf.to_container(OmegaConf.load(folder / "quickstart.yaml"))
    preset = OmegaConf.load(folder / f"{experiment}.yaml")
    groups = [line.split("override /", 1)[1].replace(": ", "=").strip()
              for line in (folder / f"{experiment}.yaml").read_text().splitlines()
              if "override /" in line]
    cfg = compose_config([f"experiment={experiment}"])
    plain = compose_config(["experiment=none", *groups])
    for key in _leaves(quick):
        own = OmegaConf.select(preset, key, default="<unset>")
        expected = OmegaConf.select(plain, key) if own == "<unset>" else own
        assert OmegaConf.select(cfg, key) == expected, key
    assert compose_config(["experiment=none"]).trainer.max_time is None
