"""A throwaway SLURM cluster for the tests: Debian's slurm-wlm and munge, started as root with their configuration,
key, sockets, state and logs in a temporary folder, on 127.0.0.1 and free ports, and stopped at the end. Its nodes
are slurmd daemons on this one machine (`slurmd -N NAME`, each with a port of its own), which is enough for job
arrays, requeues, signals and steps that span two nodes. Client commands find it through SLURM_CONF.

A job step's slurmstepd outlives slurmd, and one that has not reported its end when slurmctld stops stays behind,
retrying and deaf to SIGTERM: so jobs are ended, and their steps waited for, before the daemons stop, and the stop
fails if a slurmstepd of the cluster is still left."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
from postgres import free_port

CONF = """\
ClusterName=hpsearch-test
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={dir}/munge.socket
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool-%n
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd-%n.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
JobRequeue=1
KillWait=5
MinJobAge=2
InactiveLimit=0
SlurmctldParameters=enable_configless
{nodes}
PartitionName=debug Nodes={names} Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
"""


class SlurmCluster:
    def __init__(self, nodes: int = 2, cpus: int = 2) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="hpsearch-slurm-"))
        self.names = [f"n{i + 1}" for i in range(nodes)]
        self.cpus = cpus
        self.procs: list[subprocess.Popen] = []
        self.env = dict(os.environ, SLURM_CONF=str(self.dir / "slurm.conf"))

    def start(self) -> SlurmCluster:
        if os.geteuid() != 0:
            raise RuntimeError("the SLURM test cluster runs its daemons as root")
        for sub in ("state", *(f"spool-{n}" for n in self.names)):
            (self.dir / sub).mkdir()
        key = self.dir / "munge.key"
        key.write_bytes(os.urandom(128))
        key.chmod(0o600)
        nodes = "\n".join(
            f"NodeName={n} NodeAddr=127.0.0.1 NodeHostname=localhost Port={free_port()} CPUs={self.cpus} "
            "RealMemory=2000 State=UNKNOWN"
            for n in self.names
        )
        conf = CONF.format(dir=self.dir, ctld_port=free_port(), nodes=nodes, names=",".join(self.names))
        (self.dir / "slurm.conf").write_text(conf)
        munge = ["munged", "-F", "--force", f"--socket={self.dir}/munge.socket", f"--key-file={key}",
                 f"--pid-file={self.dir}/munged.pid", f"--log-file={self.dir}/munged.log",
                 f"--seed-file={self.dir}/munged.seed"]  # fmt: skip
        self._daemon(munge)
        self._wait(lambda: (self.dir / "munge.socket").exists(), "munged did not start")
        self._daemon(["slurmctld", "-D", "-i"])
        self._wait(lambda: self.run("scontrol", "ping").stdout.count("UP") >= 1, "slurmctld did not start")
        for n in self.names:
            self._daemon(["slurmd", "-D", "-N", n])
        self._wait(lambda: self.idle_nodes() == len(self.names), "slurmd did not start")
        return self

    def _daemon(self, argv: list[str]) -> None:
        log = open(self.dir / f"{argv[0]}-{len(self.procs)}.out", "wb")  # noqa: SIM115 (kept for the daemon's life)
        self.procs.append(subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True))  # fmt: skip

    def _wait(self, ready, what: str, timeout: float = 60) -> None:  # noqa: ANN001
        deadline = time.time() + timeout
        while not ready():
            if time.time() > deadline or any(p.poll() is not None for p in self.procs):
                logs = "".join(f.read_text(errors="replace")[-2000:] for f in self.dir.glob("*.log"))
                raise RuntimeError(f"{what} within {timeout} s: {logs}")
            time.sleep(0.2)

    def run(self, *argv: str, **kw) -> subprocess.CompletedProcess:
        """A SLURM client command against this cluster."""
        return subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=60, **kw)

    def idle_nodes(self) -> int:
        out = self.run("sinfo", "-h", "-N", "-o", "%N %t").stdout.split()
        return sum(state == "idle" for state in out[1::2])

    def jobs(self) -> list[str]:
        """The jobs the cluster still holds, pending or running (array tasks one by one)."""
        return self.run("squeue", "-h", "-r", "-o", "%i %T").stdout.split("\n")[:-1]

    def steps(self) -> list[psutil.Process]:
        """The slurmstepd processes of this cluster's jobs: those with its SLURM_CONF, which slurmd gives them (read
        from /proc, since psutil's environ() stops at the zeros slurmstepd's process title leaves at the start)."""
        mine = f"SLURM_CONF={self.env['SLURM_CONF']}".encode()
        out = []
        for p in psutil.process_iter(["name"]):
            try:
                if p.info["name"] == "slurmstepd" and p.status() != psutil.STATUS_ZOMBIE:
                    if mine in Path(f"/proc/{p.pid}/environ").read_bytes().split(b"\0"):
                        out.append(p)
            except (psutil.Error, OSError):
                pass
        return out

    def end_jobs(self) -> None:
        """Cancel every job and wait until none is queued and none of their steps is left."""
        self.run("scancel", "--user=root", "--full")
        self._wait(lambda: not self.jobs() and not self.steps(), "the cancelled jobs did not end")

    def stop(self) -> None:
        try:
            self.end_jobs()
        finally:
            for p in reversed(self.procs):
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for p in self.procs:
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            left = []
            for p in self.steps():
                with contextlib.suppress(psutil.Error):
                    left.append(" ".join(p.cmdline()))
                    p.kill()
            shutil.rmtree(self.dir, ignore_errors=True)
        if left:
            raise RuntimeError(f"left running after the SLURM cluster stopped: {', '.join(left)}")
