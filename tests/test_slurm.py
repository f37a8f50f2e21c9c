"""The demo workflow through ``--profile profiles/slurm`` on a real, single-node SLURM.

tests/slurm/start.sh installs (apt) and starts munge, slurmctld and slurmd with every
file in a temporary folder; the session ends by stopping exactly those daemons. The
tiny config of test_workflow.py runs once locally and once through a copy of the SLURM
profile in which only the site-specific values (the lines marked CHANGE: partitions,
plus sizes this node can hold) and the status polling are overridden. One glm job is
cancelled (scancel) while it runs; the profile's retries must bring the workflow to the
same numbers as the local run.

Needs root and apt (or SLURM already installed): runs when CI is set or
FMRIRECON_SLURM_TESTS=1, and then fails (not skips) when SLURM cannot be set up.
"""

import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from test_workflow import TINY

ENABLED = (os.environ.get("CI", "").lower() not in ("", "0", "false")
           or os.environ.get("FMRIRECON_SLURM_TESTS") == "1")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not ENABLED, reason="real-SLURM test: runs in CI, or set FMRIRECON_SLURM_TESTS=1 "
                                           "(needs root; installs slurm-wlm and munge with apt)"),
]

PROFILE = REPO / "profiles" / "slurm" / "config.yaml"
SCRIPTS = REPO / "tests" / "slurm"
LOCALRULES = {"all", "report", "derivatives_description"}
CPU_PARTITION, GPU_PARTITION = "debug", "gpudebug"  # as tests/slurm/start.sh names them
KILLED_RULE = "glm"  # two jobs, threads: 2 (the whole node), several seconds each
SETUP_TIMEOUT = 600  # apt-get update (2 min) + install (5 min) + daemons
RUN_TIMEOUT = 1200  # ~6 min measured on 2 shared cores


def _tail(path, n=60):
    path = Path(path)
    if not path.is_file():
        return f"({path}: missing)"
    lines = path.read_text(errors="replace").splitlines()
    return f"--- {path} (last {n} lines)\n" + "\n".join(lines[-n:])


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """Environment (os.environ + SLURM_CONF) of a private, running SLURM cluster."""
    if os.geteuid() != 0:
        pytest.fail("the SLURM test must run as root (slurmd runs the jobs); "
                    "unset FMRIRECON_SLURM_TESTS / CI to skip it")
    state = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "SLURM_TEST_CTLD_PORT": str(_free_port()),
           "SLURM_TEST_SLURMD_PORT": str(_free_port()), "SLURM_CONF": str(state / "slurm.conf")}
    env.pop("SLURM_JOB_ID", None)
    def logs():
        return "\n".join(_tail(state / f) for f in ("slurmctld.log", "slurmd.log", "munged.log"))

    try:
        done = subprocess.run(["bash", str(SCRIPTS / "start.sh"), str(state)], env=env,
                              capture_output=True, text=True, timeout=SETUP_TIMEOUT)
    except subprocess.TimeoutExpired:
        subprocess.run(["bash", str(SCRIPTS / "stop.sh"), str(state)], timeout=60)
        pytest.fail(f"SLURM setup took over {SETUP_TIMEOUT} s\n{logs()}")
    if done.returncode != 0:
        subprocess.run(["bash", str(SCRIPTS / "stop.sh"), str(state)], timeout=60)
        pytest.fail(f"SLURM setup failed:\n{done.stdout}\n{done.stderr}\n{logs()}")
    yield env
    # the cluster is private: every job in it is ours
    subprocess.run(["scancel", "--user", "root"], env=env, capture_output=True, timeout=60)
    subprocess.run(["bash", str(SCRIPTS / "stop.sh"), str(state)], timeout=60)


def test_profile_asks_a_gpu_for_every_gpu_rule():
    """Each rule with resources gpu=... has its GPU partition in the profile, and no gres."""
    gpu_rules = set()
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        # a rule's body runs to the next rule or the end of the file
        for name, body in re.findall(r"^\s*rule (\w+):\n(.*?)(?=^\s*rule \w+:|\Z)", smk.read_text(),
                                     flags=re.M | re.S):
            if re.search(r"^\s*gpu\s*=\s*[1-9]", body, flags=re.M):
                gpu_rules.add(name)
    assert "reconstruct" in gpu_rules
    profile = yaml.safe_load(PROFILE.read_text())
    assert "tasks" not in profile["default-resources"]
    for name in gpu_rules:
        settings = profile["set-resources"].get(name)
        assert settings and settings.get("slurm_partition"), f"profiles/slurm: no GPU partition for rule {name}"
        assert "gres" not in settings, f"profiles/slurm: rule {name} has gpu=1 already; gres would request twice"


def _write_test_profile(folder):
    """profiles/slurm with this cluster's partitions and sizes, and squeue polling."""
    profile = yaml.safe_load(PROFILE.read_text())
    # The lines a site changes: partitions (and sizes the test node and its 60 min
    # MaxTime can hold; EnforcePartLimits would reject the real ones).
    sizes = {"mem_mb": 1000, "runtime": 30}
    profile["default-resources"].update(slurm_partition=CPU_PARTITION, **sizes)
    for name, settings in profile["set-resources"].items():
        if "slurm_partition" in settings:
            settings["slurm_partition"] = GPU_PARTITION
        settings.update({k: v for k, v in sizes.items() if k in settings})
    # No accounting database here: poll with squeue (start.sh sets MinJobAge=600 s, far
    # above 3 x 5 s), soon after submission.
    profile["slurm-status-command"] = "squeue"
    profile["slurm-init-seconds-before-status-checks"] = 5
    # the sbatch command lines (debug messages) are the evidence of the GPU requests
    profile["verbose"] = True
    profile["slurm-keep-successful-logs"] = True
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump(profile))
    return profile


def _run_snakemake(workdir, env, *args, timeout, during=None):
    """Run snakemake in ``workdir`` (output in workdir/snakemake.log); fail on error or timeout.

    ``during(proc)`` runs in a thread while snakemake does.
    """
    log = workdir / "snakemake.log"
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(workdir / "tiny.yaml"), *args]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=workdir)
        thread = None
        if during:
            thread = threading.Thread(target=during, args=(proc,), daemon=True)
            thread.start()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            # snakemake does not exit on SIGTERM while it polls SLURM
            proc.kill()
            proc.wait(timeout=60)
            pytest.fail(f"snakemake {' '.join(args)} took over {timeout} s\n{_tail(log)}"
                        + _cluster_state(env))
        if thread:
            thread.join(timeout=30)
    if proc.returncode != 0:
        pytest.fail(f"snakemake {' '.join(args)} failed ({proc.returncode})\n{_tail(log)}" + _cluster_state(env))
    return log.read_text()


def _cluster_state(env):
    if "SLURM_CONF" not in env:
        return ""
    state = Path(env["SLURM_CONF"]).parent
    squeue = subprocess.run(["squeue", "--states=all", "-o", "%i %T %R %k"], env=env,
                            capture_output=True, text=True, timeout=30)
    return f"\n--- squeue\n{squeue.stdout}{squeue.stderr}\n{_tail(state / 'slurmctld.log', 30)}"


class Killer:
    """Cancel the first job of ``rule`` that has run for ``after`` seconds (scancel)."""

    def __init__(self, env, rule, after=2.0):
        self.env, self.rule, self.after = env, rule, after
        self.killed = None  # (slurm job id, comment)
        self.tried = []

    def __call__(self, proc):
        seen = {}
        while proc.poll() is None and self.killed is None:
            out = subprocess.run(["squeue", "-h", "--states=RUNNING", "-o", "%i|%k"], env=self.env,
                                 capture_output=True, text=True, timeout=30).stdout
            for line in out.splitlines():
                jobid, comment = line.split("|", 1)
                if not comment.startswith(f"rule_{self.rule}_"):
                    continue
                first = seen.setdefault(jobid, time.monotonic())
                if time.monotonic() - first < self.after:
                    continue
                self.tried.append(jobid)
                done = subprocess.run(["scancel", "--full", jobid], env=self.env,
                                      capture_output=True, text=True, timeout=30)
                state = subprocess.run(["squeue", "-h", "--states=all", "-j", jobid, "-o", "%T"], env=self.env,
                                       capture_output=True, text=True, timeout=30).stdout.strip()
                if done.returncode == 0 and state in ("CANCELLED", "COMPLETING"):
                    self.killed = (jobid, comment)
                    break
            time.sleep(0.3)


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("local")
    (workdir / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    log = _run_snakemake(workdir, {k: v for k, v in os.environ.items() if not k.startswith("SLURM")},
                         "--cores", "2", timeout=RUN_TIMEOUT)
    return workdir, log


@pytest.fixture(scope="module")
def slurm_run(slurm, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("onslurm")
    (workdir / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    profile = _write_test_profile(workdir / "profile")
    killer = Killer(slurm, KILLED_RULE)
    start = time.monotonic()
    log = _run_snakemake(workdir, slurm, "--profile", str(workdir / "profile"), timeout=RUN_TIMEOUT,
                         during=killer)
    print(f"\nSLURM run: {time.monotonic() - start:.0f} s, {workdir / 'snakemake.log'}")
    return workdir, log, profile, killer


def _submissions(log):
    """(snakemake job id, SLURM job id, rule, wildcards) of every sbatch submission."""
    submitted = r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: \S*/rule_(\w+?)/(?:(\S*)/)?\d+\.log\)"
    found = re.findall(submitted, log)
    return [(int(j), int(s), rule, wc) for j, s, rule, wc in found]


def _sbatch_calls(log):
    """SLURM rule name -> its sbatch command lines (the plugin's debug messages)."""
    calls = {}
    for call in re.findall(r"^sbatch call: (sbatch .*)$", log, flags=re.M):
        rule = re.search(r"--comment '?rule_(\w+?)(?:_wildcards_\S*?)?'? ", call).group(1)
        calls.setdefault(rule, []).append(call)
    return calls


def _local_jobs(log):
    return Counter(re.findall(r"^(?:local)?rule (\w+):$", log, flags=re.M))


def test_every_job_rule_ran_as_a_slurm_job(local_run, slurm_run, capsys):
    _, local_log = local_run
    _, log, _, _ = slurm_run
    expected = _local_jobs(local_log)
    remote = {r: n for r, n in expected.items() if r not in LOCALRULES}
    subs = _submissions(log)
    with capsys.disabled():  # the evidence belongs in the CI log
        print("\nsbatch submissions (snakemake job, SLURM job, rule, wildcards):")
        for s in subs:
            print("  ", *s)
    # each job of the local run, once per wildcard set (retries resubmit the same ones)
    submitted = Counter(rule for rule, _ in {(r, wc) for _, _, r, wc in subs})
    assert submitted == remote
    assert len({s for _, s, _, _ in subs}) == len(subs)  # distinct SLURM job ids
    ran_locally = set(re.findall(r"^localrule (\w+):$", log, flags=re.M))
    assert ran_locally == {r for r in expected if r in LOCALRULES}
    assert not re.search(r"^rule (all|report|derivatives_description):$", log, flags=re.M)
    # Jobs parse the workflow in remote mode, so workflow.is_main_process is False in
    # them: common.smk indexes a BIDS dataset (manifest.tsv) only in this main process.
    calls = sum(_sbatch_calls(log).values(), [])
    assert len(calls) == len(subs)
    assert all(re.search(r"--mode '?remote", c) for c in calls)


def test_gpu_rules_asked_slurm_for_a_gpu(slurm, slurm_run, capsys):
    _, log, profile, _ = slurm_run
    calls = _sbatch_calls(log)
    gpu_rules = {r for r, s in profile["set-resources"].items() if s.get("slurm_partition") == GPU_PARTITION}
    assert "reconstruct" in calls
    for rule, lines in calls.items():
        for call in lines:
            if rule in gpu_rules:
                assert " --gpus=1" in call and f"-p {GPU_PARTITION}" in call, call
            else:
                assert "--gpus" not in call and f"-p {CPU_PARTITION}" in call, call
            assert "--gres" not in call and "--ntasks-per-gpu" not in call, call
    with capsys.disabled():
        print("\nreconstruct sbatch call:", calls["reconstruct"][0][:400], "...")
    # and SLURM itself recorded the request (finished jobs stay visible for MinJobAge)
    gpu_job = next(s for _, s, r, _ in _submissions(log) if r == "reconstruct")
    shown = subprocess.run(["scontrol", "show", "job", str(gpu_job)], env=slurm, capture_output=True,
                           text=True, timeout=30).stdout
    with capsys.disabled():
        print(f"scontrol show job {gpu_job}:", " ".join(shown.split()))
    assert re.search(r"TresPerJob=\S*gpu[:=]1", shown), shown
    assert f"Partition={GPU_PARTITION}" in shown and "JobState=COMPLETED" in shown, shown


def test_slurm_run_gives_the_local_numbers(local_run, slurm_run):
    local, _ = local_run
    onslurm, _, _, _ = slurm_run
    metrics = Path("results") / "report" / "metrics.tsv"
    assert (onslurm / metrics).read_text() == (local / metrics).read_text()


def test_a_job_killed_mid_run_is_retried(slurm, slurm_run, capsys):
    workdir, log, _, killer = slurm_run
    assert killer.killed, (f"no {KILLED_RULE} job could be cancelled while running "
                           f"(tried: {killer.tried})\n{_tail(workdir / 'snakemake.log')}")
    jobid, comment = killer.killed
    with capsys.disabled():
        print(f"\ncancelled SLURM job {jobid} ({comment}) mid-run")
    subs = _submissions(log)
    killed = next(s for s in subs if s[1] == int(jobid))
    again = [s for s in subs if s[0] == killed[0] and s[1] > killed[1]]
    assert again, f"the cancelled job {jobid} was not resubmitted"
    assert re.search(rf"SLURM-job '{jobid}' failed, SLURM status is: 'CANCELLED'", log)
    with capsys.disabled():
        print(f"resubmitted as SLURM job(s) {[s[1] for s in again]}")
    assert "Finished jobid: 0 (Rule: all)" in log or re.search(r"\d+ of \d+ steps \(100%\) done", log)
