"""Add a later convergence run (more scenarios or arms) to an earlier one's JSON and page.

    .venv/bin/python bench/merge_results.py NEW.json bench/results/convergence-smollm2.json \\
        --flags "--scenarios loud" --note "run at commit f202bfa"

A SmolLM2 scenario takes over an hour on 2 cores, so its scenarios are run one command at a time;
this keeps them in one JSON and one results page. Only runs of the same model, budget and seeds
merge, and a (scenario, arm, seed) already present is refused rather than overwritten.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from bench import scenarios  # noqa: E402


class MergeError(ValueError):
    """The two runs cannot share one table; the message says what differs."""


def _key(run: dict[str, Any]) -> tuple[str, str, int]:
    return run["scenario"], run["arm"], run["seed"]


def _setting(data: dict[str, Any], field: str) -> Any:
    # The budget's `chosen` is prose about how it was chosen (added to results later), not a setting.
    value = data[field]
    return {k: v for k, v in value.items() if k != "chosen"} if field == "budget" else value


def merge(into: dict[str, Any], new: dict[str, Any], flags: str, note: str) -> dict[str, Any]:
    """``into`` with ``new``'s runs added and recorded in ``added_runs`` (flags, arms, wall time)."""
    for field in ("model", "quick", "budget", "seeds", "tuning_seed"):
        there, here = _setting(into, field), _setting(new, field)
        if there != here:
            raise MergeError(
                f"{field} differs ({there!r} there, {here!r} here): runs of different "
                "settings cannot share a table; write the new run to its own page instead"
            )
    present = {_key(r) for r in into["runs"]}
    repeated = sorted(k for k in map(_key, new["runs"]) if k in present)
    if repeated:
        raise MergeError(f"already in the results (scenario, arm, seed): {repeated}; remove them there first")
    merged = dict(into)
    merged["runs"] = [*into["runs"], *new["runs"]]
    merged["scenarios"] = [s for s in scenarios.SCENARIOS if s in into["scenarios"] or s in new["scenarios"]]
    merged["configs"] = {**into["configs"], **new["configs"]}
    added = {
        "flags": flags,
        "arms": sorted({r["arm"] for r in new["runs"]}),
        "scenarios": sorted({r["scenario"] for r in new["runs"]}),
        "wall_time_s": new["wall_time_s"],
        "note": note,
    }
    merged["added_runs"] = [*into.get("added_runs", []), added]
    return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("new", type=Path, help="JSON written by the later bench/convergence.py run.")
    parser.add_argument("into", type=Path, help="The results JSON to extend (rewritten in place).")
    parser.add_argument("--flags", required=True, help="convergence.py flags of the later run, for the page.")
    parser.add_argument("--note", default="", help="Where and at which commit the later run ran.")
    parser.add_argument("--docs", help="Results page to rewrite; default docs/results[-<model>].md.")
    args = parser.parse_args(argv)
    into = json.loads(args.into.read_text())
    try:
        merged = merge(into, json.loads(args.new.read_text()), args.flags, args.note)
    except MergeError as err:
        raise SystemExit(f"{args.new} not merged into {args.into}: {err}") from None
    args.into.write_text(json.dumps(merged, indent=1, sort_keys=True))
    from bench.results_page import default_page, write_page

    page = write_page(merged, Path(args.docs) if args.docs else default_page(merged["model"]), args.into)
    print(f"wrote {args.into} and {page}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
