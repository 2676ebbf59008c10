"""Entrypoint of the Ray job for kinds declared with `run=` (not a kind module).

The dispatcher starts ``python -m vidistill.platform.kinds.driver`` with
VIDISTILL_JOB_KIND and VIDISTILL_JOB_CONFIG (JSON) in the environment; this
rebuilds the typed config and calls the kind's `run(config)`.
"""
from __future__ import annotations

import json
import os

from vidistill.platform.kinds import get_kind


def main() -> None:
    kind = get_kind(os.environ["VIDISTILL_JOB_KIND"])
    config = kind.parse(json.loads(os.environ["VIDISTILL_JOB_CONFIG"]))
    kind.run(config)


if __name__ == "__main__":
    main()
