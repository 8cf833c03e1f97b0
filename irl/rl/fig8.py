"""Fig. 8: internal RL against its baselines, success vs episodes (PAPER.md §8).

`run(config, workdir)` trains (or resumes, or reads) every method of
`rl.fig8_methods` over `rl.seeds` and writes `<workdir>/fig8/`; see
`irl.rl.train.fig8`.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from irl.rl import train


def run(config: ml_collections.ConfigDict, workdir: str,
        methods: list[str] | None = None, skip_missing: bool = True
        ) -> dict[str, Any]:
  return train.fig8(config, workdir, methods, skip_missing)
