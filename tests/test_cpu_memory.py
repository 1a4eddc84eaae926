"""`utils.cpu_memory.keep_freed_memory`: a large tensor allocated again after being freed reuses the process's
memory instead of being page-faulted in again (each run in a fresh interpreter, where nothing set it yet)."""

import os
import subprocess
import sys

from tests.conftest import REPOSITORY
from utils.cpu_memory import ENVIRONMENT_SWITCH

CLEAN_ENVIRONMENT = {k: v for k, v in os.environ.items() if k != ENVIRONMENT_SWITCH}

# Adds 1 to a 64 MiB tensor 24 times (each result freed before the next); prints the minor page faults of the
# last 8 (the heap settles in the first few; now and then it still grows once after that). Mode "keep" applies
# keep_freed_memory first, "cli" runs the count as the main function of utils.cli.run, "default" neither.
PROGRAM = """
import argparse, resource, sys
from utils import cli
from utils.cpu_memory import keep_freed_memory
import torch

def count(applied):
    x = torch.rand(16 * 1024 * 1024)
    for _ in range(16):
        x + 1
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(8):
        x + 1
    print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)

if sys.argv[1] == "cli":
    cli.run(lambda args: count(None), argparse.ArgumentParser(), argv=[])
else:
    count(keep_freed_memory() if sys.argv[1] == "keep" else None)
"""
PAGES = 64 * 1024 * 1024 // 4096  # of one result


def faults(mode: str, environment: dict | None = None) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM, mode], cwd=REPOSITORY, capture_output=True, text=True, check=True,
        env={**CLEAN_ENVIRONMENT, **(environment or {})},
    ).stdout.split()
    return out[0], int(out[1])


def test_freed_tensors_are_reused_without_page_faults():
    applied, kept = faults("keep")
    _, default = faults("default")
    assert applied == "True"
    assert default >= 8 * PAGES  # glibc's default: every result mapped and faulted in again
    assert kept <= PAGES + 100  # kept: at most one of the 8 (the heap growing once more)


def test_the_environment_switch_leaves_the_default():
    applied, switched_off = faults("keep", {"STEREO_KEEP_FREED_MEMORY": "0"})
    assert applied == "False" and switched_off >= 8 * PAGES


def test_cli_run_applies_it():
    _, kept = faults("cli")
    assert kept <= PAGES + 100  # at most one of 8 results faulted in
