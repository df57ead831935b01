"""Check the transcribed Med-MAT CSVs against the paper's text, number by number.

Usage: python experiments/table9/check_transcription.py [PATH/TO/med-mat.txt]
(default ../shared/papers/med-mat.txt). Prints one line per table and exits 1 on a mismatch.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
# table number -> (first line of its header row in the text, numeric columns in the CSV)
TABLES = {
    3: ("Baseline\tBaseline+\tTrained", ["baseline", "baseline_plus", "trained"]),
    5: ("Table 5:", ["baseline", "trained"]),
    6: ("Table 6:", ["baseline", "trained"]),
    7: ("Table 7:", ["baseline", "trained"]),
    8: ("Table 8:", ["baseline", "trained"]),
}


def table_rows(lines: list[str], caption: str) -> list[list[str]]:
    """Tab-separated data rows of the table whose caption (or header) starts with `caption`:
    the rows after the next 'Related Combination' header, up to the first blank line."""
    start = next(i for i, line in enumerate(lines) if caption in line)
    head = next(i for i in range(start, len(lines)) if lines[i].startswith("Related Combination"))
    rows = []
    for line in lines[head + 1:]:
        if not line.strip():
            break
        rows.append([c.strip() for c in line.split("\t")])
    return rows


def main(paper: Path) -> int:
    lines = paper.read_text().splitlines()
    bad = 0
    for number, (caption, numeric) in TABLES.items():
        csv = pd.read_csv(HERE / f"medmat_table{number}.csv")
        rows = table_rows(lines, caption)
        ok = len(rows) == len(csv)
        for row, (_, rec) in zip(rows, csv.iterrows()):
            text_cells = row[:3] + [int(x) for x in row[3:3 + len(numeric)]]
            csv_cells = [rec.related_1, rec.related_2, rec.target_subset] + [
                int(rec[c]) for c in numeric]
            if text_cells != csv_cells:
                ok = False
                print(f"table {number} row {rec.row}: text {text_cells} != csv {csv_cells}")
        print(f"Med-MAT Table {number}: {len(csv)} rows in CSV, {len(rows)} in text: "
              f"{'match' if ok else 'MISMATCH'}")
        bad += not ok
    return 1 if bad else 0


if __name__ == "__main__":
    default = HERE.parents[2] / "shared" / "papers" / "med-mat.txt"
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else default))
