"""Issue 24, the cases that need a process of their own: a write that fails part-way (a file-size
limit, case 4), a read-only output folder (case 20, with the permission checks of a plain user
even when the tests run as root) and Ctrl-C during a parallel conversion (case 28).
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from test_bad_input import make_raw, write
from test_bad_input_round2 import snapshot

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def run_cli(*args, preexec=None, env=None, timeout=120):
    """``nnunet_aux ARGS`` in a new process; (exit code, stderr)."""
    proc = subprocess.run([sys.executable, "-m", "nnunet_aux.cli", *map(str, args)], capture_output=True, text=True,
                          env={**ENV, **(env or {})}, preexec_fn=preexec, timeout=timeout)
    return proc.returncode, proc.stderr


def assert_one_line(code, err, *needles):
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err and "error:" in lines[0], (code, err)
    for needle in needles:
        assert str(needle) in lines[0], (needle, lines[0])


def file_size_limit(n_bytes):
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (n_bytes, n_bytes))
    return limit


def as_plain_user():
    """Without root's permission override (dropped from the capability bounding set before exec), so
    that a read-only folder is read-only for the command even when the tests run as root."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


@pytest.fixture
def mapped_setup(tmp_path):
    """A converted dataset and predictions of it, for map-labels."""
    raw = tmp_path / "raw"
    make_raw(raw)
    code, err = run_cli("decompose", "-d", 935, "-o", 936, "--n-scales", 2, "--no-progress", "-np", 1,
                        "--raw-root", raw)
    assert code == 0, err
    pred = tmp_path / "pred"
    pred.mkdir()
    for f in sorted((raw / "Dataset936_Source_scales" / "labelsTr").iterdir()):
        label = sitk.ReadImage(str(f))
        array = sitk.GetArrayFromImage(label)
        array[array == 2] = 1  # as nnU-Net predicts: vessel 1, tumour 3
        out = sitk.GetImageFromArray(array)
        out.CopyInformation(label)
        sitk.WriteImage(out, str(pred / f.name))
    return raw, pred


# ---------------------------------------------------------------------- 4: a write that fails part-way
def test_file_size_limit_during_decompose(tmp_path):
    """Was a raw OSError traceback. Labels are written first; the limit lets the small files through."""
    raw = tmp_path / "raw"
    make_raw(raw)
    before = snapshot(raw)
    code, err = run_cli("decompose", "-d", 935, "-o", 936, "--n-scales", 2, "--no-progress", "-np", 1,
                        "--raw-root", raw, preexec=file_size_limit(120))
    assert_one_line(code, err, "cannot write", "Dataset936_Source_scales/labelsTr/case0.nii.gz", "file-size limit")
    assert snapshot(raw) == before


def test_file_size_limit_during_map_labels(mapped_setup, tmp_path):
    """Was a truncated prediction and exit 0 (SimpleITK ignores the failed write)."""
    raw, pred = mapped_setup
    out = tmp_path / "out"
    out.mkdir()
    before = snapshot(tmp_path)
    code, err = run_cli("map-labels", "-d", 936, "-i", pred, "-o", out, "--raw-root", raw,
                        preexec=file_size_limit(120))
    assert_one_line(code, err, "cannot write", out / "case0.nii.gz", "incomplete")
    assert snapshot(tmp_path) == before  # no file in out, not even a complete first one


def test_file_size_limit_during_images_only(tmp_path):
    """Was a truncated label map and exit 0."""
    folder, raw = tmp_path / "images", tmp_path / "raw"
    raw.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        write(rng.normal(0, 100, (16, 24, 24)).astype(np.float32), folder / f"img{i}.nii.gz")
    before = snapshot(tmp_path)
    code, err = run_cli("images-only", "-i", folder, "-o", 943, "--channel-names", "CT", "--threshold", 0,
                        "--raw-root", raw, "--no-progress", "-np", 1, preexec=file_size_limit(400))
    assert_one_line(code, err, "cannot write", "labelsTr/img0.nii.gz", "incomplete")
    assert snapshot(tmp_path) == before


# ----------------------------------------------------------------------- 20: a read-only output folder
@pytest.mark.parametrize("command", ["map-labels", "decompose", "images-only", "synth"])
def test_read_only_output_folder(mapped_setup, tmp_path, command):
    """Was a PermissionError traceback."""
    raw, pred = mapped_setup
    locked = tmp_path / "locked"
    locked.mkdir()
    args = {"map-labels": ["map-labels", "-d", 936, "-i", pred, "-o", locked / "out", "--raw-root", raw],
            "decompose": ["decompose", "-d", raw / "Dataset935_Source", "-o", 937, "--n-scales", 2, "-np", 1,
                          "--no-progress", "--raw-root", locked],
            "images-only": ["images-only", "-i", raw / "Dataset935_Source", "-o", 938, "-np", 1, "--no-progress",
                            "--raw-root", locked],
            "synth": ["synth", "-d", 939, "-n", 1, "--shape", 16, 24, 24, "-np", 1, "--no-progress",
                      "--raw-root", locked]}[command]
    locked.chmod(0o555)
    try:
        before = snapshot(tmp_path)
        code, err = run_cli(*args, preexec=as_plain_user)
        assert_one_line(code, err, locked, "ermission denied")
        assert snapshot(tmp_path) == before
    finally:
        locked.chmod(0o755)


# ------------------------------------------------------------------------- 28: Ctrl-C during decompose
def _children(pid):
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc")
def test_ctrl_c_during_a_parallel_decompose(tmp_path):
    """Was worker tracebacks (Process SpawnPoolWorker-N:) and sometimes a leaked-semaphore warning.
    Ctrl-C reaches the whole process group, as from a terminal."""
    raw = tmp_path / "raw"
    # 32 small cases: the interrupt comes after the first label, while most cases are still to come (with 8 an
    # idle 2-core machine could finish them all between that label and the signal: exit 0, a flaky test)
    make_raw(raw, n_train=32)
    before = snapshot(raw)
    proc = subprocess.Popen([sys.executable, "-m", "nnunet_aux.cli", "decompose", "-d", "935", "-o", "936",
                             "--n-scales", "2", "--no-progress", "-np", "2", "--raw-root", str(raw)],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=_interrupt_as_from_a_terminal)
    deadline = time.time() + 120
    workers = []
    while time.time() < deadline and proc.poll() is None:
        workers = [c for c in _children(proc.pid) if Path(f"/proc/{c}/cmdline").read_bytes().count(b"spawn_main")]
        if len(workers) >= 2 and list(raw.glob(".Dataset936_*.partial/labelsTr/*")):
            break  # the workers are busy with the cases
        time.sleep(0.02)
    assert proc.poll() is None and len(workers) >= 2, "the workers never started"
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["nnunet_aux decompose: interrupted"], err
    assert snapshot(raw) == before  # no staging folder, no lock, no dataset
    # the workers must go, but on a loaded machine (a CI runner, a training beside) they may take more than a
    # fraction of a second to be scheduled and exit: wait for them with a deadline instead of a fixed sleep
    deadline = time.time() + 30
    while (left := _live(workers)) and time.time() < deadline:
        time.sleep(0.1)
    assert not left, f"workers left: {left}"


def _interrupt_as_from_a_terminal() -> None:
    """SIGINT back to its default in the command under test: a shell starts a background job (``pytest ... &``,
    ``nohup``) with SIGINT ignored, the command would inherit that, and the Ctrl-C would never arrive."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _live(pids: list[int]) -> list[int]:
    """The processes among ``pids`` that still run (a zombie has exited; its parent just has not reaped it)."""
    live = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            continue
        if state != "Z":
            live.append(pid)
    return live
