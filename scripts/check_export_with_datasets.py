"""Loads rewardlab exports with Hugging Face `datasets`, as a trainer would.

    python3 -m pip install datasets
    rewardlab export --project demo --format preferences --out prefs
    rewardlab export --project demo --format comparisons --out comparisons.jsonl
    python3 scripts/check_export_with_datasets.py prefs comparisons.jsonl

Checks that the preference splits have exactly TRL's columns (prompt, chosen, rejected, and
margin when asked for), that no prompt is in both splits, and that a comparisons file loads.
"""
import json
import sys
from pathlib import Path

from datasets import load_dataset


def main(prefs_dir: str, comparisons: str) -> None:
    prefs = Path(prefs_dir)
    ds = load_dataset("json", data_files={"train": str(prefs / "train.jsonl"), "test": str(prefs / "test.jsonl")})
    for split in ds.values():
        extra = set(split.column_names) - {"prompt", "chosen", "rejected", "margin"}
        assert not extra, f"columns TRL does not expect: {extra}"
        assert {"prompt", "chosen", "rejected"} <= set(split.column_names)
    shared = set(ds["train"]["prompt"]) & set(ds["test"]["prompt"])
    assert not shared, f"{len(shared)} prompts are in both splits"
    manifest = json.loads((prefs / "manifest.json").read_text())
    print(f"preferences: train {ds['train'].num_rows}, test {ds['test'].num_rows}, schema_version {manifest['schema_version']}")
    cmp = load_dataset("json", data_files=comparisons)["train"]
    assert cmp.num_rows == 0 or set(cmp["schema_version"]) == {1}
    print(f"comparisons: {cmp.num_rows} rows, {len(cmp.column_names)} columns")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
