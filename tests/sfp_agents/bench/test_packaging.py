"""What ``pip install sfp`` puts into site-packages: only ``sfp_env`` and ``sfp_agents`` (no
top-level ``benchmarks`` that would collide with another distribution's), with the shipped
suites and configs as package data."""

from __future__ import annotations

import configparser
from pathlib import Path

from setuptools import find_packages

from sfp_agents.bench.leaderboard import SUITES_DIR, shipped_suites

ROOT = Path(__file__).resolve().parents[3]


def test_only_the_sfp_packages_are_installed() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    include = cfg.get("options.packages.find", "include").split()
    packages = find_packages(str(ROOT), include=include)
    assert {p.split(".")[0] for p in packages} == {"sfp_env", "sfp_agents"}
    assert "sfp_agents.bench" in packages
    data = cfg.get("options.package_data", "sfp_agents")
    assert "bench/suites/*.yaml" in data.split()


def test_the_suites_ship_inside_the_package() -> None:
    assert SUITES_DIR.is_relative_to(ROOT / "sfp_agents")
    assert {"smoke", "small", "sevir_plain", "nse_plain"} <= set(shipped_suites())
