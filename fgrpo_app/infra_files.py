"""Write the generated files of infra/ for one experiment config: S3 policies and the pinned pool template.

    python -m fgrpo_app.infra_files --config configs/demo.yaml --out infra

writes `policies/owner-<id>.json` (for the config's bucket, prefix and experiment) and
`work-pool-template.json` (the owners' process work pool template without `command`, `env` and
`working_dir`, so nobody can override them; the device comes from each worker's environment). tests/test_infra.py checks that
the committed files are these.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fgrpo_app.s3_access import write_policies
from fgrpo_app.stack_owners import pinned_job_template
from fgrpo_core.config import ExperimentConfig, load_config

TEMPLATE_FILE = "work-pool-template.json"


def write_infra_files(cfg: ExperimentConfig, out_dir: Path) -> list[Path]:
    paths = write_policies(cfg, out_dir / "policies")
    template = out_dir / TEMPLATE_FILE
    template.write_text(json.dumps(pinned_job_template(), indent=2) + "\n")
    return [*paths, template]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config", type=Path, required=True, help="Experiment config (bucket, prefix, owners)."
    )
    parser.add_argument("--out", type=Path, default=Path("infra"), help="Folder to write into.")
    args = parser.parse_args(argv)
    for path in write_infra_files(load_config(args.config), args.out):
        print(path)


if __name__ == "__main__":  # pragma: no cover
    main()
