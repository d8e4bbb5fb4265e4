"""Stand-ins for SLURM's sbatch, srun, sacct, scontrol and scancel (tests only).

State lives in $FAKE_SLURM_DIR: ``submitted.jsonl`` (one line per sbatch: id, script,
parsed #SBATCH flags), ``scripts/<id>.sh``, ``state/<task>`` (PENDING, RUNNING, COMPLETED,
FAILED, CANCELLED), ``pids/<task>`` (the srun'd process), ``requeue/<task>`` markers and
``calls.log`` (every command line). sbatch starts a detached runner that honours
``--array=A-B%P``, ``--dependency=afterany:ID``, ``--time`` with ``--signal=USR2@S``
(the signal goes to the srun'd process, as SLURM sends it to job steps) and requeues.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

DIR = Path(os.environ["FAKE_SLURM_DIR"])
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT")


def log_call(name, argv):
    DIR.mkdir(parents=True, exist_ok=True)
    with open(DIR / "calls.log", "a") as f:
        f.write(" ".join([name, *argv]) + "\n")


def set_state(task, state):
    (DIR / "state").mkdir(parents=True, exist_ok=True)
    (DIR / "state" / task).write_text(state)


def get_state(task):
    path = DIR / "state" / task
    return path.read_text() if path.is_file() else None


def sbatch(argv):
    script = Path(argv[-1]).read_text()
    flags = dict(re.findall(r"^#SBATCH --([\w-]+)(?:=(.*))?$", script, flags=re.M))
    counter = DIR / "counter"
    job_id = int(counter.read_text()) + 1 if counter.is_file() else 1001
    counter.write_text(str(job_id))
    (DIR / "scripts").mkdir(parents=True, exist_ok=True)
    (DIR / "scripts" / f"{job_id}.sh").write_text(script)
    with open(DIR / "submitted.jsonl", "a") as f:
        f.write(json.dumps({"id": job_id, "flags": flags, "script": script}) + "\n")
    tasks = task_names(job_id, flags)
    for task in tasks:
        set_state(task, "PENDING")
    subprocess.Popen([sys.executable, __file__, "_run", str(job_id)], start_new_session=True,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(f"Submitted batch job {job_id}")


def task_names(job_id, flags):
    if "array" not in flags:
        return [str(job_id)]
    first, last = re.match(r"(\d+)-(\d+)", flags["array"]).groups()
    return [f"{job_id}_{i}" for i in range(int(first), int(last) + 1)]


def run(job_id):
    entry = [json.loads(line) for line in open(DIR / "submitted.jsonl")]
    flags = next(e["flags"] for e in entry if e["id"] == int(job_id))
    dependency = flags.get("dependency")
    if dependency:
        dep = dependency.split(":", 1)[1]
        while True:
            states = [get_state(p.name) for p in (DIR / "state").glob(f"{dep}*") if p.name.split("_")[0] == dep]
            if states and all(s in TERMINAL for s in states):
                break
            time.sleep(0.2)
    parallel = int(flags["array"].split("%")[1]) if "%" in flags.get("array", "") else 10 ** 6
    pending, running = task_names(job_id, flags), {}
    timeout_s = int(flags.get("time", "5")) * 60
    signal_delay = int(flags.get("signal", "USR2@90").split("@")[1])
    while pending or running:
        while pending and len(running) < parallel:
            task = pending.pop(0)
            if get_state(task) == "CANCELLED":
                continue
            running[task] = (start_task(job_id, task), time.time(), False)
        for task, (proc, start, signalled) in list(running.items()):
            if proc.poll() is None:
                if not signalled and time.time() - start > timeout_s - signal_delay:
                    pid_file = DIR / "pids" / task
                    if pid_file.is_file():
                        os.kill(int(pid_file.read_text()), signal.SIGUSR2)
                        running[task] = (proc, start, True)
                continue
            del running[task]
            marker = DIR / "requeue" / task
            if marker.is_file():
                marker.unlink()
                running[task] = (start_task(job_id, task), time.time(), False)
            elif get_state(task) != "CANCELLED":
                set_state(task, "COMPLETED" if proc.returncode == 0 else "FAILED")
        time.sleep(0.1)


def start_task(job_id, task):
    env = dict(os.environ, SLURM_JOB_ID=task.replace("_", "0"), SLURM_NTASKS="1", SLURM_JOB_NUM_NODES="1",
               SLURM_JOB_NODELIST="fakenode", FAKE_SLURM_TASK=task)
    if "_" in task:
        env.update(SLURM_ARRAY_JOB_ID=str(job_id), SLURM_ARRAY_TASK_ID=task.split("_")[1])
    set_state(task, "RUNNING")
    return subprocess.Popen(["bash", str(DIR / "scripts" / f"{job_id}.sh")], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def srun(argv):
    outputs, i = {}, 0
    while argv[i].startswith("--"):
        if argv[i] in ("--output", "--error"):
            outputs[argv[i]] = argv[i + 1]
            i += 2
        else:
            i += 1
    task = os.environ["FAKE_SLURM_TASK"]
    array_id, _, index = task.partition("_")

    def path(pattern):
        return (pattern.replace("%A", array_id).replace("%a", index).replace("%j", os.environ["SLURM_JOB_ID"])
                .replace("%t", "0"))

    env = dict(os.environ, SLURM_PROCID="0", SLURM_LOCALID="0", SLURM_NODEID="0")
    out = open(path(outputs["--output"]), "a")
    err = open(path(outputs["--error"]), "a") if "--error" in outputs else out
    proc = subprocess.Popen(argv[i:], env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
    (DIR / "pids").mkdir(parents=True, exist_ok=True)
    (DIR / "pids" / task).write_text(str(proc.pid))
    sys.exit(proc.wait())


def sacct(argv):
    ids = [argv[i + 1] for i, a in enumerate(argv) if a == "-j"]
    print("JobID|State|NodeList")
    for state_file in sorted((DIR / "state").glob("*")):
        if state_file.name.split("_")[0] in ids:
            print(f"{state_file.name}|{state_file.read_text()}|fakenode")


def scontrol(argv):
    if argv[:1] == ["requeue"]:
        (DIR / "requeue").mkdir(parents=True, exist_ok=True)
        (DIR / "requeue" / argv[1]).write_text("")


def scancel(argv):
    for job in [a for a in argv if re.fullmatch(r"\d+(_\d+)?", a)]:
        for state_file in (DIR / "state").glob("*"):
            if state_file.name == job or state_file.name.split("_")[0] == job:
                set_state(state_file.name, "CANCELLED")


if __name__ == "__main__":
    if sys.argv[1] == "_run":
        run(sys.argv[2])
    else:
        name = Path(sys.argv[1]).name
        log_call(name, sys.argv[2:])
        {"sbatch": sbatch, "srun": srun, "sacct": sacct, "scontrol": scontrol, "scancel": scancel}[name](sys.argv[2:])
