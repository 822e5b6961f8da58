"""The tests never write into the user's real data cache."""

from __future__ import annotations

import os
from pathlib import Path

from sfp_env.data.cache import cache_dir


def test_the_tests_use_a_cache_of_their_own() -> None:
    root = Path(cache_dir()).resolve()
    assert os.environ["SFP_CACHE_DIR"].strip()
    assert root != (Path.home() / ".cache" / "sfp").resolve()
