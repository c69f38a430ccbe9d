"""The executors that run a campaign on this machine and wait: ``local`` and ``debug``.

``local``: every job is a process of its own (:class:`~microcal_hpc.launcher.job_process.JobProcess`),
started as soon as its dependencies are done and the cores it declares are free
(:mod:`~microcal_hpc.launcher.cores`), so independent jobs run at once when the cores allow; each job is
pinned to its own cores. Of the jobs ready to start, those that need the most cores start first (then
plan order): a job that needs every core starts while the machine is free, instead of waiting for a
stream of one-core jobs to drain and leaving cores idle meanwhile. The jobs of a kind that preloads
modules (the CNN jobs: TensorFlow) are forked from a fork server that imports them once, while the
first jobs run (:mod:`~microcal_hpc.launcher.forkserver`).
``campaign.max_parallel`` caps the number of jobs at once (0: as many as the cores allow);
``campaign.serial`` (``submit --serial``) runs one job at a time, for debugging. A job is stopped at
its ``time_min`` (state TIMEOUT; a rerun resumes training from its last epoch).

SIGINT or SIGTERM to the launcher (Ctrl-C) stops every running job with SIGTERM (SIGKILL after
``STOP_GRACE_S``), records them INTERRUPTED and the jobs not started CANCELLED, and ends with
:class:`Interrupted` (one line, exit code 128 + the signal). If the launcher dies, even by SIGKILL,
its jobs get SIGTERM from the kernel and stop; a new launcher first waits for such jobs to end.

``debug``: the jobs run in this process, one after the other, with tracebacks on stderr.
"""
from __future__ import annotations

import os
import select
import signal
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, TextIO

from microcal_hpc.config import Config
from microcal_hpc.errors import MicrocalError
from microcal_hpc.launcher import forkserver, locks, records
from microcal_hpc.launcher.cores import Allocator, Allotment, cpu_list_text
from microcal_hpc.launcher.job_process import JobProcess, preloaded_modules
from microcal_hpc.launcher.plan import JobSpec, Plan

STOP_GRACE_S = 20.0  # a job told to stop gets this long to end before SIGKILL
PREVIOUS_WAIT_S = 60.0  # how long to wait for a job process left by an earlier launcher to end


class Interrupted(MicrocalError):
    """The launcher was stopped by a signal; its jobs were stopped and recorded."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


def job_limit(cfg: Config) -> int:
    """Jobs at once: 1 when ``campaign.serial``, else ``campaign.max_parallel`` (0: no limit but the cores)."""
    return 1 if cfg.campaign.serial else cfg.campaign.max_parallel


def concurrency_text(cfg: Config, cpus: Optional[list[int]] = None) -> str:
    """How many jobs the local executor runs at once here, in words."""
    cpus = Allocator(cpus).cpus
    cores = f"{len(cpus)} core{'s' if len(cpus) > 1 else ''} ({cpu_list_text(cpus)})"
    if cfg.campaign.serial:
        return f"one job at a time (campaign.serial) on {cores}"
    limit = f", at most {cfg.campaign.max_parallel}" if cfg.campaign.max_parallel else ""
    return f"as many jobs at once as {cores} allow{limit}"


def deps_ready(spec: JobSpec, states: dict[str, str]) -> Optional[bool]:
    """None: wait; True: run; False: skip (an ``afterok`` dependency did not complete). Dependencies
    not in ``states`` are complete (not part of this run)."""
    deps = [states.get(k, "COMPLETED") for k in spec.depends_on]
    if any(s not in records.TERMINAL for s in deps):
        return None
    if spec.dependency == "afterok" and any(s != "COMPLETED" for s in deps):
        return False
    return True


class _Wakeup:
    """While active (main thread only): SIGINT and SIGTERM are noted in ``signum`` instead of raising
    (a third one raises KeyboardInterrupt, should the launcher be stuck), and they or the end of a
    child process (SIGCHLD) wake :meth:`wait` at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD)

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self.count = 0  # stop signals so far
        self._active = threading.current_thread() is threading.main_thread()

    def __enter__(self) -> "_Wakeup":
        if self._active:
            self._read, self._write = os.pipe()
            for fd in (self._read, self._write):
                os.set_blocking(fd, False)
            self._old_fd = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
            self._old = {s: signal.signal(s, self._note) for s in self.SIGNALS}
        return self

    def _note(self, signum: int, frame) -> None:
        if signum == signal.SIGCHLD:
            return
        self.count += 1
        self.signum = self.signum or signum
        if self.count >= 3:
            raise KeyboardInterrupt

    @property
    def repeated(self) -> bool:
        """A second stop signal arrived (kill the jobs at once)."""
        return self.count > 1

    def wait(self, timeout: float, fds: tuple[int, ...] = ()) -> None:
        """Until a signal, a child's end, one of ``fds`` readable (forked jobs' sentinels) or ``timeout``."""
        if not self._active:
            if fds:
                select.select(list(fds), [], [], timeout)
            else:
                time.sleep(timeout)
            return
        if self._read in select.select([self._read, *fds], [], [], timeout)[0]:
            while True:
                try:
                    if not os.read(self._read, 512):
                        break
                except BlockingIOError:
                    break

    def __exit__(self, *exc) -> None:
        if self._active:
            for s, old in self._old.items():
                signal.signal(s, old)
            signal.set_wakeup_fd(self._old_fd)
            os.close(self._read)
            os.close(self._write)


@dataclass
class _Running:
    spec: JobSpec
    process: JobProcess
    started: float  # time.monotonic()
    deadline: float
    stopped_for: Optional[str] = None  # TIMEOUT | INTERRUPTED: the launcher told it to stop
    kill_at: Optional[float] = None


class _LocalRun:
    """One run of the local executor over ``todo`` (see the module docstring)."""

    def __init__(self, cfg: Config, plan: Plan, todo: list[JobSpec], out: Optional[TextIO]) -> None:
        self.cfg, self.run_dir, self.todo = cfg, plan.run_dir, list(todo)
        self.out: Optional[TextIO] = out or sys.stdout
        self.alloc = Allocator()
        self.limit = job_limit(cfg)
        self.pending = list(todo)
        self.running: dict[str, _Running] = {}
        self.states: dict[str, str] = {}
        self.done = 0
        self.stop_reason = ""

    def say(self, msg: str) -> None:
        """A progress line; once the output is gone (closed pipe or terminal), the campaign runs on
        without it (the records and logs hold everything)."""
        if self.out is None:
            return
        try:
            print(msg, file=self.out, flush=True)
        except OSError:
            self.out = None

    def run(self) -> dict[str, str]:
        with _Wakeup() as self.wake:
            forkserver.start(m for spec in self.todo for m in preloaded_modules(spec))
            self._wait_for_earlier_processes()
            self._register()
            try:
                self._loop()
            except Interrupted:
                raise
            except BaseException as e:  # never leave a job behind
                why = "the launcher failed" if isinstance(e, Exception) else "the launcher was stopped"
                self._stop_running(why)
                self._cancel_pending(why)
                raise
        return self.states

    def _loop(self) -> None:
        while self.pending or self.running:
            if self.wake.signum:
                self._interrupt()
            self._reap()
            self._start_ready()
            self._enforce_time_limits()
            if self.pending and not self.running:  # cannot happen with a plan in dependency order
                raise RuntimeError(f"local executor: nothing runs and {self.pending[0].key} cannot start")
            if self.running:
                sentinels = (job.process.sentinel for job in self.running.values())
                self.wake.wait(self.cfg.campaign.poll_seconds, tuple(s for s in sentinels if s is not None))

    # -- before the first job

    def _wait_for_earlier_processes(self) -> None:
        """A job process of an earlier launcher (killed, its jobs still stopping) must end first."""
        for spec in self.todo:
            path = locks.job_lock_path(self.run_dir, spec.key)
            if locks.free(path):
                continue
            holder = locks.describe(locks.read_holder(path))
            self.say(f"waiting for {spec.stage}/{spec.name} of an earlier launcher to end ({holder})")
            if locks.wait_free(path, PREVIOUS_WAIT_S, stop=lambda: self.wake.signum is not None):
                continue
            if self.wake.signum:
                raise Interrupted(self.wake.signum, f"interrupted by {signal.Signals(self.wake.signum).name} "
                                                    "before any job started")
            raise locks.Busy(f"{spec.key}: still running from an earlier launcher ({holder}) after "
                             f"{PREVIOUS_WAIT_S:.0f} s; stop it or wait, then submit again")

    def _register(self) -> None:
        for spec in self.todo:
            records.new_submission(self.run_dir, spec, "local")
            records.update_record(self.run_dir, spec.key, state="PENDING", launcher_pid=os.getpid(),
                                  launcher_host=socket.gethostname())
            self.states[spec.key] = "PENDING"
        self.say(f"local executor: {len(self.todo)} jobs, {concurrency_text(self.cfg, self.alloc.cpus)} "
                 f"(logs: {Path(self.run_dir) / 'logs' / 'local'})")

    # -- starting

    def _start_ready(self) -> None:
        """Start every waiting job whose dependencies are done and whose cores are free: those that need
        the most cores first, then in plan order (a job that fits may start before one that does not)."""
        for spec in sorted(self.pending, key=lambda s: -self.alloc.need(s.resources)[0]):
            if self.limit and len(self.running) >= self.limit:
                return
            ready = deps_ready(spec, self.states)
            if ready is None:
                continue
            if ready is False:
                self.pending.remove(spec)
                self._skip(spec)
                continue
            allotment = self.alloc.take(spec.resources)
            if allotment is None:
                continue
            self.pending.remove(spec)
            self._start(spec, allotment)

    def _start(self, spec: JobSpec, allotment: Allotment) -> None:
        process = JobProcess(spec, allotment)
        now = time.monotonic()
        limit_s = spec.resources.time_min * 60
        self.running[spec.key] = _Running(spec, process, now, now + limit_s)
        records.update_record(self.run_dir, spec.key, launcher=True, job_id=str(process.pid), state="PENDING",
                              log=str(process.err_path), log_out=str(process.out_path),
                              log_err=str(process.err_path))
        self.say(f"started {spec.stage}/{spec.name} on {allotment.describe()} (pid {process.pid}; "
                 f"{len(self.running)} running, {len(self.pending)} waiting)")

    def _skip(self, spec: JobSpec) -> None:
        failed = [k for k in spec.depends_on if self.states.get(k, "COMPLETED") != "COMPLETED"]
        why = f"dependency {', '.join(failed)} did not complete"
        records.update_record(self.run_dir, spec.key, state="SKIPPED", ended=records.now(), error=f"not run: {why}")
        self._finish(spec, "SKIPPED", 0.0, f" ({why})")

    # -- ending

    def _reap(self) -> None:
        for key, job in list(self.running.items()):
            rc = job.process.poll()
            if rc is None:
                continue
            del self.running[key]
            self.alloc.give_back(job.process.allotment)
            state, error = self._outcome(job, rc)
            rec = records.read_record(self.run_dir, key)
            # process_s: the job's process from start to end as the launcher saw it (start-up included)
            records.update_record(self.run_dir, key, state=state, error=error, ended=rec.get("ended") or records.now(),
                                  process_s=round(time.monotonic() - job.started, 1))
            note = "" if state == "COMPLETED" else f" (log: {job.process.err_path})"
            self._finish(job.spec, state, time.monotonic() - job.started, note)

    def _outcome(self, job: _Running, rc: int) -> tuple[str, Optional[str]]:
        """(state, error) of a job process that ended with exit code ``rc``."""
        rec = records.read_record(self.run_dir, job.spec.key)
        if rc == 0:  # done before it could act on a stop
            return "COMPLETED", None
        if job.stopped_for == "TIMEOUT":
            where = f"campaign.resources.{job.spec.job_type}.time_min or campaign.job_resources"
            return "TIMEOUT", f"stopped at its time limit ({job.spec.resources.time_min} min, {where})"
        if job.stopped_for == "INTERRUPTED":
            return "INTERRUPTED", f"stopped: {self.stop_reason}"
        if rec.get("pid") == job.process.pid and rec.get("state") in records.TERMINAL:
            return rec["state"], rec.get("error")  # the job's own account
        if rc < 0:
            return "FAILED", f"killed by {signal.Signals(-rc).name}"
        return "FAILED", _last_line(job.process.err_path) or f"exit code {rc}"

    def _finish(self, spec: JobSpec, state: str, elapsed: float, note: str = "") -> None:
        self.done += 1
        self.states[spec.key] = state
        self.say(f"[{self.done}/{len(self.todo)}] {spec.stage}/{spec.name}: {state} after {elapsed:.1f} s{note}")

    def _enforce_time_limits(self) -> None:
        now = time.monotonic()
        for job in self.running.values():
            if job.stopped_for is None and now >= job.deadline:
                self._tell_to_stop(job, "TIMEOUT")
            elif job.kill_at is not None and now >= job.kill_at:
                job.process.kill()

    def _tell_to_stop(self, job: _Running, why: str) -> None:
        job.stopped_for, job.kill_at = why, time.monotonic() + STOP_GRACE_S
        job.process.stop()

    def _interrupt(self) -> None:
        """The launcher got SIGINT/SIGTERM: stop the running jobs, cancel the waiting ones, raise
        :class:`Interrupted`."""
        name = signal.Signals(self.wake.signum).name
        stopped = self._stop_running(f"the launcher got {name}")
        cancelled = self._cancel_pending(f"the launcher got {name}")
        raise Interrupted(self.wake.signum, f"interrupted by {name}: {stopped} running job(s) stopped (INTERRUPTED), "
                                            f"{cancelled} not started (CANCELLED); run the same command again to resume")

    def _stop_running(self, why: str) -> int:
        """Tell every running job to stop (SIGKILL after ``STOP_GRACE_S`` or a second signal), wait for
        them and record them INTERRUPTED; return how many there were."""
        self.stop_reason = why
        stopped = list(self.running.values())
        for job in stopped:
            if job.stopped_for is None:  # (one already stopping at its time limit stays TIMEOUT)
                self._tell_to_stop(job, "INTERRUPTED")
        kill_at = min((job.kill_at for job in stopped), default=0.0)
        while self.running:
            if self.wake.repeated or time.monotonic() >= kill_at:
                for job in self.running.values():
                    job.process.kill()
            self._reap()
            if self.running:
                self.wake.wait(0.2)
        return len(stopped)

    def _cancel_pending(self, why: str) -> int:
        for spec in self.pending:
            records.update_record(self.run_dir, spec.key, state="CANCELLED", ended=records.now(),
                                  error=f"not started: {why}")
        cancelled, self.pending = len(self.pending), []
        return cancelled


def _last_line(path: Path) -> Optional[str]:
    """The last non-empty line of a log file (at most 500 characters), or None."""
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - 4096))
            lines = [ln.strip() for ln in fh.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return None
    return lines[-1][:500] if lines else None


def run_local(cfg: Config, plan: Plan, todo: list[JobSpec], out: Optional[TextIO] = None) -> dict[str, str]:
    """Run ``todo`` as local job processes packed into this machine's cores; wait until the campaign
    ends and return {key: final state}. Raises :class:`Interrupted` when stopped by SIGINT/SIGTERM."""
    return _LocalRun(cfg, plan, todo, out).run()


# ----------------------------------------------------------------------------------------------
# debug


def run_debug(cfg: Config, plan: Plan, todo: list[JobSpec], out: Optional[TextIO] = None) -> dict[str, str]:
    """Run ``todo`` in this process, one after the other (tracebacks on stderr; no pickling)."""
    from microcal_hpc.launcher.worker import run_spec

    out = out or sys.stdout
    states: dict[str, str] = {}
    for spec in todo:
        records.new_submission(plan.run_dir, spec, "debug")
        records.update_record(plan.run_dir, spec.key, state="PENDING", job_id=f"debug-{spec.key}",
                              launcher_pid=os.getpid(), launcher_host=socket.gethostname(), log=spec.job_log,
                              log_err=spec.job_log)
    for i, spec in enumerate(todo, 1):
        ready = deps_ready(spec, states)
        t0 = time.time()
        if ready is False:
            records.update_record(plan.run_dir, spec.key, state="SKIPPED", ended=records.now(),
                                  error="not run: a dependency did not complete")
            states[spec.key] = "SKIPPED"
        else:
            print(f"[{i}/{len(todo)}] running {spec.stage}/{spec.name} in-process", file=out, flush=True)
            try:
                run_spec(spec)
                states[spec.key] = "COMPLETED"
            except KeyboardInterrupt:
                _cancel(plan.run_dir, todo[i:])
                raise Interrupted(signal.SIGINT, f"interrupted by SIGINT: {spec.stage}/{spec.name} stopped (INTERRUPTED), "
                                                 f"{len(todo) - i} not started (CANCELLED); run the same command "
                                                 "again to resume") from None
            except Exception:
                traceback.print_exc()
                states[spec.key] = "FAILED"
        print(f"[{i}/{len(todo)}] {spec.stage}/{spec.name}: {states[spec.key]} after {time.time() - t0:.1f} s",
              file=out, flush=True)
    return states


def _cancel(run_dir: str, specs: list[JobSpec]) -> None:
    for spec in specs:
        records.update_record(run_dir, spec.key, state="CANCELLED", ended=records.now(),
                              error="not started: the launcher got SIGINT")
