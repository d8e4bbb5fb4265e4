"""benchmarks/op_count.py: leaf operators of one training step, against stock in the same run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "op_count.py"


def test_counts_stock_and_lite_and_lite_launches_more(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--trainers", "lite", "--patch", "16", "32", "32",
                           "--features", "4", "8", "16", "--batch", "2"], capture_output=True, text=True,
                          encoding="utf-8", timeout=110, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in proc.stdout.splitlines()
            if line.startswith("| stock") or line.startswith("| lite")}
    assert set(rows) == {"stock", "lite"}
    assert rows["stock"][1].strip() == "1.00" and rows["stock"][3].strip() == "1.00"
    stock_total, lite_total = int(rows["stock"][0]), int(rows["lite"][0])
    # three extra decoders with their losses: far more operators than stock's one decoder
    assert lite_total > 2 * stock_total > 0
    assert int(rows["lite"][2]) <= lite_total and int(rows["lite"][2]) > int(rows["stock"][2])
