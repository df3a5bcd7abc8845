"""``chatlake watch``: new data in, new model versions out, with no further command.

The watcher is a supervisor; it does no heavy work itself:

* **inbox**: files dropped into ``<home>/inbox/`` are imported and moved away (``pipelines.watch.inbox``), by a
  thread of their own, so an import never waits behind a decision nor a decision behind an import;
* **lake**: watchdog wakes it on new events from the logger, the proxy or imports (the Delta log folder and the
  spool), and it re-checks at least every ``watch.poll_seconds`` for clock-based conditions;
* **decision**: the trigger policy (``pipelines.watch.policy``); new conversations are counted
  (``pipelines.watch.observe``) only when no other rule holds the decision back. Each decision that differs from the
  previous one is appended to ``<home>/watch/decisions.jsonl`` (``chatlake status`` shows them);
* **run**: a child process (``python -m pipelines.watch.run``) runs snapshot, train, evaluate and promote, so a
  crash or an out-of-memory kill there cannot take the watcher down. One run at a time; data arriving
  meanwhile counts toward the next run (it is newer than the run's snapshot).

Restart safety. The child holds ``locks/run-<id>.lock`` from before it starts (the watcher takes the lock and
hands the descriptor over), so "is the run alive?" is a lock probe that no pid reuse or zombie can fool. A
watcher that restarts (after a crash, SIGKILL, a reboot) finds the run in ``state.json``: if its child is alive
it adopts it and keeps supervising; if it died, the run is resumed once (completed steps are skipped, and a
version already registered for the snapshot is reused, never registered twice), and a second death marks it
failed. A clean stop (Ctrl-C, SIGTERM) terminates the child and marks the run interrupted, to be resumed by
the next watcher without counting as a failure.

Failures back off exponentially with jitter; after ``max_consecutive_failures`` in a row the watcher stops
training (it keeps importing the inbox) until ``chatlake watch --reset``. Errors of the watcher's own work
(a lake file replaced mid-read, a full disk) are logged as decisions and retried after ``poll_seconds``.
The config is read when the watcher starts: restart it after editing ``config.yaml``.
"""

from __future__ import annotations

import fcntl
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Callable

from lake.home import Home
from lake.locks import LockBusy, file_lock
from pipelines.watch import inbox, observe
from pipelines.watch.policy import Decision, Observation, backoff_delay, decide, hold
from pipelines.watch.state import (
    append_decision,
    load_run,
    load_state,
    run_alive,
    run_lock_path,
    run_log_path,
    save_run,
    update_state,
    watcher_lock_path,
)
from schemas.errors import Busy, one_line
from schemas.watch import InflightRun, RunRecord, WatchState

MAX_ATTEMPTS = 2           # a run whose child died is resumed once; the second death is a failure
STOP_GRACE_SECONDS = 20.0  # a child asked to stop gets this long before SIGKILL
RUN_POLL_SECONDS = 0.5     # how often a run in flight is checked on
MIN_SLEEP_SECONDS = 0.05   # the floor between two iterations: the watcher never spins


class WatcherBusy(Busy, RuntimeError):
    """Another watcher holds this home."""


def new_run_id(now: float) -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime(now)) + "-" + os.urandom(3).hex()


class Watcher:
    """One watcher per home. ``tick()`` is one iteration; ``serve()`` loops; ``once()`` is one decision."""

    def __init__(self, home: Home | str | Path | None = None, *, clock: Callable[[], float] = time.time,
                 rng: Callable[[], float] = random.random, echo: Callable[[str], None] | None = None,
                 pipeline: str = "pipelines.watch.run:STEPS"):
        """``pipeline`` names the steps a run executes (``module:attribute``); it is stored with each run, so
        whichever watcher resumes the run executes the same steps."""
        self.home = Home.resolve(home).ensure()
        self.cfg = self.home.config.watch
        self.pipeline = pipeline
        self.clock = clock
        self.rng = rng
        self.echo = echo or (lambda line: None)
        self.wake = threading.Event()        # anything changed: decide again
        self.inbox_wake = threading.Event()  # the inbox changed: look for files to import
        self.stopping = threading.Event()
        self._child: subprocess.Popen | None = None
        self._pending = observe.PendingCounter(self.home)
        self._next_inbox: float | None = None
        self._complete: set[str] = set()  # inbox files seen renamed in or closed after writing: ready at once
        self._complete_lock = threading.Lock()

    # -- one iteration ------------------------------------------------------------------------------------
    def tick(self) -> Decision:
        """Check on the run in flight, decide, and start a run if it is time."""
        self.supervise()
        decision = self.decide()
        if decision.action == "train" and not self.stopping.is_set():
            self.start_run(decision)
        return decision

    def process_inbox(self) -> None:
        """Import every settled or complete file of the inbox (see ``pipelines.watch.inbox``)."""
        with self._complete_lock:
            complete = frozenset(self._complete)
        files, self._next_inbox = inbox.pending_files(self.home, self.clock(), self.cfg.inbox_settle_seconds,
                                                      complete)
        for path in files:
            if self.stopping.is_set():
                return
            with self._complete_lock:
                self._complete.discard(path.name)
            result = inbox.import_file(self.home, path)
            update_state(self.home, lambda s: s.imports.append(result))
            what = f"error: {result.error}" if result.error else \
                f"{result.imported} imported, {result.duplicates} duplicate(s), {result.quarantined} quarantined"
            self.echo(f"inbox: {result.file} -> {result.moved_to} ({what})")

    def decide(self) -> Decision:
        """The policy on what the watcher sees now; the new conversations are counted only when needed."""
        state = load_state(self.home)
        now = self.clock()
        snapshot = observe.last_snapshot(self.home)
        obs = Observation(now=now, last_write_at=observe.last_write_at(self.home),
                          last_snapshot_at=snapshot.created_at.timestamp() if snapshot else None,
                          pending_since=state.pending_since, last_completed_at=state.last_completed_at,
                          consecutive_failures=state.consecutive_failures, retry_at=state.retry_at,
                          run_in_progress=state.run is not None,
                          erased_production=observe.erased_production(self.home, self.cfg.model_name))
        decision = hold(obs, self.cfg)
        if decision is None:
            count = self._pending.count(snapshot)
            if count and snapshot is None and state.pending_since is None:
                update_state(self.home, lambda s: setattr(s, "pending_since", now))
                obs = replace(obs, pending_since=now)
            decision = decide(replace(obs, new_conversations=count), self.cfg)
        self._record(decision, state)
        return decision

    def _record(self, decision: Decision, state: WatchState) -> None:
        """Log a decision when it differs from the previous one (action, rule, count): a watcher polling for
        hours waiting for the threshold writes one line per change, not one per poll."""
        last = state.last_decision or {}
        if (last.get("action"), last.get("code"), last.get("details", {}).get("new_conversations")) == \
                (decision.action, decision.code, decision.details.get("new_conversations")):
            return
        entry = {"at": self.clock(), **decision.to_dict()}
        update_state(self.home, lambda s: setattr(s, "last_decision", entry))
        append_decision(self.home, entry)
        self.echo(f"decision: {decision.action} ({decision.code}): {decision.reason}")

    # -- runs -----------------------------------------------------------------------------------------
    def start_run(self, decision: Decision) -> str:
        now = self.clock()
        run_id = new_run_id(now)
        save_run(self.home, RunRecord(run_id=run_id, model_name=self.cfg.model_name, pipeline=self.pipeline,
                                      trigger=decision.to_dict(), created_at=now))
        update_state(self.home, lambda s: setattr(s, "run", InflightRun(run_id=run_id, started_at=now)))
        self._spawn(run_id)
        self.echo(f"run {run_id}: started ({decision.reason})")
        return run_id

    def _spawn(self, run_id: str) -> None:
        """Start the child with the run's lock already held, so it is never unlocked while the run lives.

        The attempt is counted before the start, so a child that cannot even start is not retried forever."""
        def count(s: WatchState) -> None:
            s.run.attempts += 1
            s.run.interrupted = False
        update_state(self.home, count)
        lock_path = run_lock_path(self.home, run_id)
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.set_inheritable(fd, True)
            package_root = str(Path(__file__).resolve().parent.parent)
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(
                p for p in (package_root, os.environ.get("PYTHONPATH")) if p)}
            with open(run_log_path(self.home, run_id), "ab") as log:
                self._child = subprocess.Popen(
                    [sys.executable, "-m", "pipelines.watch.run", str(self.home.root), run_id, "--lock-fd", str(fd)],
                    pass_fds=(fd,), start_new_session=True, stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, env=env)
        finally:
            os.close(fd)  # the child's copy keeps the lock

        update_state(self.home, lambda s: setattr(s.run, "pid", self._child.pid))

    def supervise(self) -> None:
        """Check on the run in flight: still running, finished, or dead (resume once, then fail)."""
        state = load_state(self.home)
        if state.run is None or run_alive(self.home, state.run.run_id):
            return
        how = "while no watcher was supervising it"
        if self._child is not None:
            code = self._child.wait()
            self._child = None
            how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
            if code == -signal.SIGKILL:
                how += ", out of memory?"
        record = load_run(self.home, state.run.run_id)
        if record is not None and record.status in ("succeeded", "failed"):
            self._finish(record)
            return
        if record is not None and (state.run.interrupted or state.run.attempts < MAX_ATTEMPTS):
            self.echo(f"run {record.run_id}: resuming at {record.stage or 'the start'}")
            self._spawn(record.run_id)
            return
        record = record or RunRecord(run_id=state.run.run_id, model_name=self.cfg.model_name,
                                     created_at=state.run.started_at)
        record.status, record.finished_at = "failed", self.clock()
        record.error = f"the run's process died during {record.stage or 'start-up'} ({how}); " \
                       f"its output: {run_log_path(self.home, record.run_id)}"
        save_run(self.home, record)
        self._finish(record)

    def _finish(self, record: RunRecord) -> None:
        now = self.clock()
        failed = record.status == "failed"

        def change(s: WatchState) -> None:
            s.run, s.last_decision = None, None  # the next decision is news, whatever it says
            s.last_run = {"run_id": record.run_id, "status": record.status, "finished_at": now,
                          "outcome": record.outcome, "error": record.error, "stage": record.stage,
                          "outputs": record.outputs}
            if failed:
                s.consecutive_failures += 1
                s.retry_at = now + backoff_delay(s.consecutive_failures, self.cfg, self.rng)
            else:
                s.consecutive_failures, s.retry_at = 0, None
                s.last_completed_at, s.pending_since = now, None
        state = update_state(self.home, change)
        run_lock_path(self.home, record.run_id).unlink(missing_ok=True)  # only a watcher (this one) opens it
        entry = {"at": now, "action": "finished", "code": record.status,
                 "reason": record.error if failed else record.outcome, "next_check_at": state.retry_at,
                 "details": {"run_id": record.run_id, "consecutive_failures": state.consecutive_failures}}
        append_decision(self.home, entry)
        self.echo(f"run {record.run_id}: {record.status}: {entry['reason']}")

    def stop_run(self) -> None:
        """Terminate the run in flight (its process group), then mark it interrupted: the next watcher resumes
        it without counting a failed attempt. Also when the child already died of the same stop request (a
        service manager signalling the whole group), as long as it had not finished."""
        state = load_state(self.home)
        if state.run is None:
            return
        run_id = state.run.run_id
        record = load_run(self.home, run_id)
        pid = (record.pid if record else None) or state.run.pid
        for sig, grace in ((signal.SIGTERM, STOP_GRACE_SECONDS), (signal.SIGKILL, 5.0)):
            if pid is None or not run_alive(self.home, run_id):
                break
            try:
                os.killpg(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
            deadline = time.monotonic() + grace
            while run_alive(self.home, run_id) and time.monotonic() < deadline:
                time.sleep(0.1)
        if self._child is not None:
            self._child.wait()
            self._child = None
        record = load_run(self.home, run_id)
        if record is None or record.status not in ("running", "interrupted"):
            return  # it finished first: the next supervise records the outcome
        record.status = "interrupted"
        save_run(self.home, record)
        update_state(self.home, lambda s: s.run and setattr(s.run, "interrupted", True))
        self.echo(f"run {run_id}: interrupted; the next watcher resumes it")

    def wait_for_run(self) -> RunRecord | None:
        """Block until the run in flight finishes (``--once``); None if the watcher was asked to stop first."""
        while not self.stopping.is_set():
            self.supervise()
            state = load_state(self.home)
            if state.run is None:
                return load_run(self.home, state.last_run["run_id"]) if state.last_run else None
            self.stopping.wait(RUN_POLL_SECONDS)
        return None

    # -- the loop -------------------------------------------------------------------------------------
    def _sleep_for(self, decision: Decision) -> float:
        candidates = [self.cfg.poll_seconds]
        if decision.next_check_at is not None:
            candidates.append(decision.next_check_at - self.clock())
        if load_state(self.home).run is not None:
            candidates.append(RUN_POLL_SECONDS)
        return max(MIN_SLEEP_SECONDS, min(candidates))

    def once(self) -> tuple[Decision, RunRecord | None]:
        """One decision (importing the inbox first), then wait for the run in flight, if any: one it started,
        resumed or adopted. For cron and tests; a stop request (SIGTERM) interrupts the run, to be resumed."""
        with self._session():
            restore = self._install_signals()
            try:
                self.process_inbox()
                decision = self.tick()
                run = None
                if load_state(self.home).run is not None:
                    run = self.wait_for_run()
                    if run is None:
                        self.stop_run()
                return decision, run
            finally:
                restore()

    def serve(self) -> None:
        """Watch until Ctrl-C or SIGTERM; then stop the run in flight (to be resumed) and return.

        The inbox has its own thread, so an import never waits behind a decision (counting new conversations
        runs the quality and dedup views over the whole lake) and a decision never waits behind an import."""
        from watchdog.observers import Observer

        with self._session():
            restore = self._install_signals()
            for folder in (self.home.inbox_dir, self.home.spool_dir):
                folder.mkdir(parents=True, exist_ok=True)
            self._pending.store.table()  # a fresh home has no table yet: its log folder is watched
            observer = Observer()
            observer.schedule(self._inbox_handler(), str(self.home.inbox_dir), recursive=False)
            observer.schedule(_wake_handler(self.wake), str(self.home.spool_dir), recursive=True)
            observer.schedule(_wake_handler(self.wake), str(observe.delta_log_dir(self.home)), recursive=False)
            observer.start()
            importer = threading.Thread(target=self._inbox_loop, name="chatlake-inbox", daemon=True)
            importer.start()
            self.echo(f"watching {self.home.root} (inbox: {self.home.inbox_dir}); Ctrl-C stops")
            try:
                while not self.stopping.is_set():
                    self.wake.clear()  # events from here on wake the next wait
                    decision = self._safe(self.tick, "decision")
                    self.wake.wait(self._sleep_for(decision))
                    self.stopping.wait(MIN_SLEEP_SECONDS)  # a burst of events is one wake-up
            finally:
                observer.stop()
                observer.join()
                importer.join()
                self.stop_run()
                restore()
                self.echo("stopped")

    def _inbox_handler(self):
        """Wakes the importer on inbox changes, and remembers files known to be complete: renamed to their
        name inside the inbox, or closed after writing (inotify's close-write)."""
        from watchdog.events import FileSystemEventHandler

        inbox_dir = str(self.home.inbox_dir)
        watcher = self

        class InboxEvents(FileSystemEventHandler):
            def dispatch(self, event) -> None:
                kind = event.event_type
                if kind in ("opened", "closed_no_write"):
                    return
                with watcher._complete_lock:
                    if kind in ("modified", "deleted", "moved"):  # written again (or gone): not complete now
                        watcher._complete.discard(os.path.basename(event.src_path))
                    path = event.dest_path if kind == "moved" else event.src_path
                    name = os.path.basename(path)
                    if kind in ("moved", "closed") and os.path.dirname(path) == inbox_dir \
                            and not inbox.in_progress(name):
                        watcher._complete.add(name)
                watcher.inbox_wake.set()

        return InboxEvents()

    def _inbox_loop(self) -> None:
        while not self.stopping.is_set():
            self.inbox_wake.clear()
            self._safe(self.process_inbox, "inbox")
            timeout = self.cfg.poll_seconds
            if self._next_inbox is not None:  # a file still settling
                timeout = min(timeout, self._next_inbox - self.clock())
            self.inbox_wake.wait(max(MIN_SLEEP_SECONDS, timeout))

    def _safe(self, work: Callable[[], Decision | None], what: str) -> Decision | None:
        """Run ``work``; an error (a lake file replaced mid-read, a registry hiccup, a full disk) is logged
        as a decision and retried after ``poll_seconds``: a long-running watcher outlives transient trouble."""
        try:
            return work()
        except Exception as exc:
            decision = Decision("wait", "error", f"{what}: {one_line(exc)}",
                                self.clock() + self.cfg.poll_seconds)
            self._record(decision, load_state(self.home))
            return decision

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()
        self.inbox_wake.set()

    def _install_signals(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        for sig in previous:
            signal.signal(sig, lambda *_: self.stop())

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return restore

    @contextmanager
    def _session(self) -> Iterator[None]:
        """Hold the watcher lock (one watcher per home; the kernel frees it if this process dies), show the
        watcher in the state, and first recover what a previous watcher left in flight."""
        with ExitStack() as stack:
            try:
                stack.enter_context(file_lock(watcher_lock_path(self.home), blocking=False))
            except LockBusy:
                pid = load_state(self.home).watcher_pid
                raise WatcherBusy(f"another watcher is running for {self.home.root}"
                                  + (f" (pid {pid})" if pid else "")) from None

            def claim(s: WatchState) -> None:
                s.watcher_pid, s.watcher_started_at = os.getpid(), self.clock()
            update_state(self.home, claim)
            stack.callback(update_state, self.home, lambda s: setattr(s, "watcher_pid", None))
            self.supervise()  # adopt a live child, resume a dead one, or mark it failed
            yield


def _wake_handler(*wakes: threading.Event):
    """A watchdog handler that sets ``wakes`` on any write under a watched folder.

    Opens and read-only closes are ignored: the watcher's own reads of the spool would otherwise wake it.
    """
    from watchdog.events import FileSystemEventHandler

    class Wake(FileSystemEventHandler):
        def dispatch(self, event) -> None:
            if event.event_type not in ("opened", "closed_no_write"):
                for wake in wakes:
                    wake.set()

    return Wake()
