"""The README's training commands compose the run they describe (issue 12, point 1).

The commands are read out of README.md, split as the shell splits them, and composed with
Hydra's compose API through ``compose_config`` (what train.py composes: no rewriting of the
command line), so this test breaks when the README and the configs drift apart.
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


def _bash_lines(text: str) -> list[str]:
    """Every command of the README's ```bash blocks, continuation lines joined."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        lines += block.replace("\\\n", " ").splitlines()
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
                args.append(arg.replace("<run>", "run"))   # the README's placeholder
            found.append(args)
    return found


def readme_train_commands() -> list[list[str]]:
    commands = []
    for line in _bash_lines((REPO / "README.md").read_text()):
        tokens = shlex.split(line, comments=True)
        commands += _overrides_after(tokens, "train.py")
        for token in tokens:   # scripts/slurm/render.py ... TRAIN_ARGS="..." (train.py's args)
            if token.startswith("TRAIN_ARGS="):
                strategy = [t for t in tokens if t.startswith("STRATEGY=")]
                trainer = strategy[0].split("=", 1)[1] if strategy else "ddp"
                commands.append([f"trainer={trainer}",
                                 *shlex.split(token.split("=", 1)[1])])
    return commands


def _choice(args: list[str], group: str) -> str | None:
    return next((a.split("=", 1)[1] for a in args if a.startswith(group + "=")), None)


COMMANDS = readme_train_commands()
# train.yaml's default preset: a command that names no experiment= is the quickstart
QUICKSTART = [c for c in COMMANDS if _choice(c, "experiment") is None]


def test_the_readme_has_the_commands_this_test_checks():
    assert len(COMMANDS) >= 10, COMMANDS
    assert ["run_dir=outputs/quickstart"] in QUICKSTART   # the set-up command
    assert [] in QUICKSTART                               # `python train.py`
    assert any("model=im64" in c and "trainer=gpu" in c and "data=folder" in c
               for c in COMMANDS)
    assert any("trainer=ddp" in c and "model=adm256" in c for c in COMMANDS)


@pytest.mark.parametrize("args", [c for c in COMMANDS if c not in QUICKSTART],
                         ids=lambda c: " ".join(c)[:80])
def test_readme_command_gets_its_groups_defaults_not_the_quickstarts(args):
    cfg = compose_config(args)
    given = {a.split("=", 1)[0] for a in args}
    experiment = _choice(args, "experiment")
    if experiment != "none":   # a preset: its own values, whatever they are, not the quickstart's
        preset = OmegaConf.load(REPO / "configs" / "experiment" / f"{experiment}.yaml")
        assert cfg.trainer.max_steps == preset.trainer.max_steps
        assert cfg.trainer.max_time == preset.trainer.max_time
        assert cfg.module.optimizer.lr == preset.module.optimizer.lr
        assert cfg.module.ema.rates == preset.module.ema.rates
        return
    # experiment=none: train.yaml's own defaults, a real run, no time cap
    assert cfg.trainer.max_time is None
    if "trainer.max_steps" not in given:
        assert cfg.trainer.max_steps == 500000
    assert cfg.module.optimizer.lr == 1.0e-4
    assert cfg.module.ema.rates == "0.9999" and cfg.module.ema.power == pytest.approx(0.6666667)
    assert cfg.module.lr_schedule.warmup_steps == 0 and cfg.module.lr_schedule.decay == "none"
    assert cfg.diffusion.schedule == "linear"      # diffusion=linear1000, train.yaml's default
    trainer = _choice(args, "trainer") or "cpu"
    precision = {"cpu": "32-true", "gpu": "bf16-mixed", "ddp": "bf16-mixed",
                 "fsdp": "bf16-mixed"}[trainer]
    assert cfg.trainer.precision == precision
    assert cfg.data.source == (_choice(args, "data") or "digits")
    if _choice(args, "model") == "im64":
        assert cfg.model.model_channels == 128 and list(cfg.model.channel_mult) == [1, 2, 3, 4]
    if "data.urls" in given:
        assert "{000000.." in str(cfg.data.urls)   # the brace range reaches the data module


@pytest.mark.parametrize("args", QUICKSTART, ids=lambda c: " ".join(c) or "(no arguments)")
def test_the_quickstart_keeps_its_settings(args):
    cfg = compose_config(args)
    assert cfg.data.source == "digits" and cfg.data.image_size == 16 and cfg.data.channels == 1
    assert cfg.model.model_channels == 32 and list(cfg.model.channel_mult) == [1, 2, 2]
    assert cfg.diffusion.schedule == "cosine" and cfg.diffusion.steps == 1000
    assert cfg.trainer.accelerator == "cpu" and cfg.trainer.precision == "bf16-mixed"
    assert cfg.trainer.max_steps == 3000 and cfg.trainer.max_time == "00:00:10:00"
    assert cfg.module.optimizer.lr == 1.0e-3 and cfg.module.lr_schedule.warmup_steps == 200
    assert cfg.module.ema.rates == "0.999" and cfg.module.ema.power == 0.75
    assert cfg.callbacks.sample_grid.every_n_steps == 1000


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
