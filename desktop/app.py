"""The desktop app: a QApplication on a qasync loop that runs the embedded services and shows
their tasks live.

`main(data_dir)` is what plain `herald` runs. A second launch for the same data dir finds
the first through a local socket, asks it to come to the front and exits.

Which Herald it shows is the user's choice (File → Connect to server…, File → Switch to):
this computer's own services, or a saved remote server (desktop.servers), for which it
starts nothing. The last choice is used at the next start; `herald --server NAME` (or
$HERALD_SERVER) picks one for this run.

Quitting (the window's close button, Ctrl+Q, the File or tray menu) goes through
`request_quit()`: with tasks running it opens a window-modal question (`open()`, never
`exec()`: a nested event loop inside a coroutine loses other tasks' wake-ups, which froze
the live view and hung the stop for good) and the answer starts the quit. Every await of
the quit is bounded, so each answer does what it says within seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import qasync
from PySide6.QtCore import QObject, QSettings, QSignalBlocker, Qt, QTimer
from PySide6.QtGui import QGuiApplication, QIcon
from PySide6.QtNetwork import QLocalServer, QLocalSocket
from PySide6.QtWidgets import QApplication

from desktop.bridge import ClientBridge
from desktop.notify import DesktopNotifications
from desktop.removal import PendingRemoval
from desktop.servers import (
    THIS_COMPUTER,
    Server,
    ServerBook,
    ServerCheckError,
    UrlProblem,
    check_server,
    normalize_url,
)
from desktop.services import SERVICE_NAMES, ServiceMonitor
from desktop.task_model import TaskModel
from desktop.ui.main_window import MainWindow
from desktop.ui.quit_dialog import QuitChoice, QuitDialog
from desktop.ui.server_dialog import ServerDialog
from embedded import herald_version
from embedded.client import ApiError
from services.core.retry import format_seconds
from services.core.wording import cancel_text

log = logging.getLogger(__name__)

ACTIVE = ("running", "queued")
CANCEL_WAIT = 8.0  # seconds "Cancel them and quit" waits for the tasks to end
STOP_WAIT = 8.0  # seconds the services get to stop before what is left is killed


def process_age() -> float:
    """Seconds since this process started (Linux: from /proc; elsewhere since import)."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.monotonic() - _IMPORTED_AT


_IMPORTED_AT = time.monotonic()


def paint_on_the_gui_thread() -> None:
    """Have Qt's raster engine fill on the GUI thread, never hand a fill to its thread pool
    and wait for it: on a machine busy with the tasks' own processes, each wait for those
    threads to be scheduled is a freeze of the whole window. Qt reads it at the first fill
    that would go to the pool, so call it before the window is first painted."""
    os.environ.setdefault("QT_NO_GUI_THREADPOOL", "1")


def app_icon() -> QIcon:
    return QIcon(str(files("desktop") / "resources" / "herald.svg"))


def instance_key(data_dir: Path) -> str:
    """The local-socket name of the app serving `data_dir` (one app per data dir and user)."""
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]
    return f"herald-{os.getuid() if hasattr(os, 'getuid') else 0}-{digest}"


def ask_running_instance(key: str) -> bool:
    """Ask an app already running for this data dir to come to the front; True if one did."""
    sock = QLocalSocket()
    sock.connectToServer(key)
    if not sock.waitForConnected(500):
        return False
    sock.write(b"show\n")
    sock.waitForBytesWritten(500)
    sock.disconnectFromServer()
    return True


class DesktopApp(QObject):
    """Wires the service monitor, the client bridge, the task model and the window.

    Args:
        data_dir: the data dir whose services to run.
        settings: where the window's state is remembered.
        self_check: quit with status 0 once the services are ready and live updates flow
            (status 1 if that fails): for smoke tests of a build.
        server: the saved server to use (`--server NAME`; "local": this computer); None:
            $HERALD_SERVER, else the last choice.
        servers: the saved servers (default: in `settings`, tokens in the config dir).

    Raises:
        KeyError: `server` names no saved server.
    """

    def __init__(self, data_dir: Path, settings: QSettings, *, self_check: bool = False,
                 server: str | None = None, servers: ServerBook | None = None) -> None:  # fmt: skip
        super().__init__()
        self.servers = servers or ServerBook(settings)
        chosen = self.servers.startup_choice(server)
        paint_on_the_gui_thread()  # before the window is shown
        self.data_dir = data_dir
        self.self_check = self_check
        self.exit_code = 0
        self.timings: dict[str, float] = {}
        self.monitor = ServiceMonitor(data_dir, self)
        self.bridge = ClientBridge(self)
        self.model = TaskModel(self)
        self.window = MainWindow(self.model, SERVICE_NAMES, str(self.monitor.layout.log_dir),
                                 app_icon(), settings)  # fmt: skip
        self.server_dialog: ServerDialog | None = None  # while File → Connect… is open
        self._switching: asyncio.Task[None] | None = None
        if not self_check:  # `--server NAME` is the choice made last, for the next start too
            self.servers.set_current(chosen)
        self._use(chosen)
        self._quitting = False
        self.quit_dialog: QuitDialog | None = None  # while the quit question is open
        self._user_cancelled: set[str] = set()  # tasks this app asked to cancel
        self._done = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._local_server: QLocalServer | None = None
        # Without a tray, notifications go to the desktop's notification service (D-Bus).
        self.notifications: DesktopNotifications | None = None
        if self.window.tray is None:
            self.notifications = DesktopNotifications(parent=self)
            self.window.set_notifier(self.notifications)

        m, b, w = self.monitor, self.bridge, self.window
        m.service_changed.connect(w.lights.set_service)
        m.service_logged.connect(w.log_dock.append)
        m.services_ready.connect(self._on_monitor_services_ready)
        m.services_failed.connect(self._on_monitor_services_failed)
        m.notice.connect(w.show_notice)
        b.problems_found.connect(lambda problems: [w.show_notice(p) for p in problems])
        b.catalog_loaded.connect(self._on_bridge_catalog_loaded)
        b.identity_loaded.connect(w.set_identity)
        b.tasks_loaded.connect(self.model.load)
        b.tasks_loaded.connect(lambda _tasks: w.activity_view.set_source(b.activity))
        b.tasks_loaded.connect(lambda _tasks: w.set_loading(False))
        b.tasks_reloaded.connect(self.model.reload)
        b.history_paged.connect(self.model.set_cursor)
        b.reload_size = self.model.rowCount
        self.model.page_wanted.connect(
            lambda text, states, before: self._spawn(self._fetch_page(text, states, before)))
        self.removal = PendingRemoval(self.model, self)
        self.removal.committed.connect(lambda ids: self._spawn(self._forget(ids, quiet=True)))
        self.removal.expired.connect(w.hide_undo)
        w.remove_requested.connect(self._on_window_remove_requested)
        w.undo_requested.connect(self._on_window_undo_requested)
        b.task_received.connect(self.model.upsert)
        b.events_received.connect(self.model.take_events)
        b.connection_changed.connect(self._on_bridge_connection_changed)
        self.model.tasks_changed.connect(w.refresh_details)
        self.model.task_finished.connect(self._on_model_task_finished)
        self.model.task_missing.connect(lambda tid: self._spawn(self._fetch(tid)))
        # The window title counts active tasks (seen in the task bar); updated at most 5x/s.
        self._title_timer = QTimer(self, singleShot=True, interval=200)
        self._title_timer.timeout.connect(self._update_title)
        for changed in (self.model.tasks_changed, self.model.rowsInserted, self.model.rowsRemoved):
            changed.connect(self._schedule_title)
        w.run_requested.connect(
            lambda name, args, timeout: self._spawn(self._submit(name, args, timeout)))
        w.cancel_requested.connect(lambda ids: self._spawn(self._cancel(ids)))
        w.rerun_requested.connect(self._on_window_rerun_requested)
        w.clear_finished_requested.connect(self._on_window_clear_finished_requested)
        w.restart_services_requested.connect(lambda: self._spawn(self._restart()))
        w.open_in_browser_requested.connect(lambda: self._spawn(self._open_in_browser()))
        w.connect_dialog_requested.connect(self.open_server_dialog)
        w.server_chosen.connect(self.switch_to)
        w.quit_requested.connect(self.request_quit)
        w.detail.save_output_requested.connect(
            lambda tid, path: self._spawn(self._save_output(tid, path)))

    # ------------------------------------------------------------------ life

    def listen_for_second_launch(self, key: str) -> None:
        QLocalServer.removeServer(key)  # a stale socket of a crashed run
        server = QLocalServer(self)
        server.setSocketOptions(QLocalServer.SocketOption.UserAccessOption)
        if server.listen(key):
            server.newConnection.connect(self._on_local_server_new_connection)
            self._local_server = server

    async def run(self) -> int:
        """Show the window, start everything, and return when the app has quit."""
        self.window.show()
        self.timings["window_shown"] = process_age()
        remote = self.monitor.remote
        self.window.show_status(f"Connecting to {remote.name}…" if remote is not None
                                else "Starting services…", 0)  # fmt: skip
        await self.monitor.start()
        await self._done.wait()
        return self.exit_code

    def request_quit(self) -> None:
        """The user asked to quit: with tasks running in services this app runs, ask what
        to do with them (without blocking the loop); the answer starts the quit."""
        if self._quitting:
            return
        if self.quit_dialog is not None:  # asked again while the question is open
            self.quit_dialog.raise_()
            self.quit_dialog.activateWindow()
            return
        active = self._active_ids()
        if not active or self.self_check or not self.monitor.owns_services:
            self._spawn(self.quit(ask=False))
            return
        self.window.bring_to_front()
        box = QuitDialog(len(active), self.window)
        box.chosen.connect(self._on_quit_dialog_chosen)
        self.quit_dialog = box
        box.open()

    def _on_quit_dialog_chosen(self, choice: str) -> None:
        box, self.quit_dialog = self.quit_dialog, None
        if box is not None:
            box.deleteLater()
        if choice == QuitChoice.STAY.value:
            self.window.show_status("Herald stays open; the tasks go on.")
            return
        cancel = self._active_ids() if choice == QuitChoice.CANCEL.value else []
        self._spawn(self.quit(ask=False, cancel=cancel))

    async def quit(self, *, ask: bool = True, cancel: Sequence[str] = ()) -> None:
        """Quit: cancel the tasks `cancel` (waiting a bounded time for them to end), stop
        the services this app runs (an attached `herald serve` keeps running), close.

        With `ask` it only asks first (see `request_quit`) and returns at once; the quit
        itself starts from the answer.
        """
        if ask:
            self.request_quit()
            return
        if self._quitting:
            return
        self._quitting = True
        if self.quit_dialog is not None:  # e.g. SIGTERM while the question is open
            self.quit_dialog.done(0)
        if cancel:
            self.window.show_status(f"Cancelling {len(cancel)} task(s)…", 0)
            await self._cancel_and_wait(list(cancel), CANCEL_WAIT)
        self.window.show_status("Stopping services…", 0)
        started = time.monotonic()
        await self.bridge.close()  # bounded by itself
        closed = time.monotonic()
        # The worker puts tasks it could not finish back in the queue: they run next time.
        pids = self.monitor.pids()
        stop = asyncio.ensure_future(self.monitor.stop())
        await asyncio.sleep(0)  # the supervisor has closed the children's stdin: stopping
        self._hurry_worker()
        try:
            await asyncio.wait_for(stop, STOP_WAIT)
            log.info("quit: connection closed in %.2f s, services stopped in %.2f s",
                     closed - started, time.monotonic() - closed)  # fmt: skip
        except TimeoutError:
            left = [p for p in pids if _alive(p)]
            log.error("the services did not stop within %.0f s; killing pid(s) %s",
                      STOP_WAIT, left)  # fmt: skip
            for pid in left:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        except Exception:
            log.exception("stopping the services failed")
        if self.notifications is not None:
            self.notifications.close()
        self.window.close_for_quit()
        self._done.set()

    def _hurry_worker(self) -> None:
        """Ask the worker a second time to stop (SIGTERM after the end of its stdin): it
        then gives running attempts no grace to finish but puts their tasks back in the
        queue at once, as "Quit, run them next time" says."""
        sup = self.monitor.instance.supervisor if self.monitor.owns_services else None
        pid = sup.pid("worker") if sup is not None else None
        if pid is not None:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)

    async def _cancel_and_wait(self, ids: list[str], timeout: float) -> None:
        """Cancel `ids`, then wait (at most `timeout` s in all) until none is active."""
        pending = set(ids)
        all_ended = asyncio.Event()

        def check(*_: object) -> None:
            pending.difference_update(
                [i for i in pending if (t := self.model.task_by_id(i)) is None
                 or t["state"] not in ACTIVE])  # fmt: skip
            if not pending:
                all_ended.set()

        self.model.tasks_changed.connect(check)
        try:
            async with asyncio.timeout(timeout):
                await self._cancel(ids)
                check()
                await all_ended.wait()
        except TimeoutError:
            log.warning("%d task(s) had not stopped %.0f s after being cancelled; quitting",
                        len(pending), timeout)  # fmt: skip
        finally:
            self.model.tasks_changed.disconnect(check)

    def _active_ids(self) -> list[str]:
        return [t["id"] for t in self.model.all_tasks() if t["state"] in ACTIVE]

    # -------------------------------------------------------------- handlers

    def _on_monitor_services_ready(self) -> None:
        self.timings.setdefault("services_ready", process_age())
        self.window.hide_failure()
        remote = self.monitor.remote
        if remote is not None:
            who = f"Connected to {remote.name} ({remote.url}) as {self.monitor.principal}"
        elif self.monitor.attached_pid:
            who = f"Connected to the Herald run by pid {self.monitor.attached_pid}"
        else:
            who = "Services ready"
        self.window.show_status(who)
        self._spawn(self._open_bridge())

    async def _open_bridge(self) -> None:
        try:
            await self.bridge.open(self.monitor.api_url, self.monitor.ws_url, self.monitor.token,
                                   self.monitor.tls)  # fmt: skip
        except Exception as exc:
            log.error("cannot talk to the services: %s", exc)
            self.window.show_failure(f"cannot talk to the services: {exc}")
            self.exit_code = 1 if self.self_check else self.exit_code
        else:
            self.timings.setdefault("history_loaded", process_age())
            remote = self.monitor.remote
            if remote is not None and not remote.is_loopback:
                await self._check_sign_in(remote)
            # What the app holds once started lives as long as it does: out of the
            # collector's sight, a full collection under a stream of events scans only
            # what came since (one took 200 ms on this machine, a visible freeze).
            gc.freeze()
        if self.self_check and not self._quitting:
            await self.quit(ask=False)

    def _on_monitor_services_failed(self, message: str) -> None:
        self.window.show_failure(message)
        if self.self_check:
            self.exit_code = 1
            self._spawn(self.quit(ask=False))

    def _on_bridge_catalog_loaded(self, specs: list[dict[str, Any]]) -> None:
        self.model.set_titles({s["name"]: s["title"] for s in specs})
        self.model.set_displays({s["name"]: s.get("display") for s in specs})
        self.window.set_catalog(specs)
        remembered = self.window.remembered_catalog_task()
        if remembered:
            self.window.select_catalog_task(remembered)

    def _on_bridge_connection_changed(self, state: str, retry_in: float) -> None:
        self.window.lights.set_connection(state, retry_in if retry_in >= 0 else None)
        if state == "connected":
            self.timings.setdefault("live", process_age())

    def _on_model_task_finished(self, task_id: str) -> None:
        task = self.model.task_by_id(task_id)
        asked_to_cancel = task_id in self._user_cancelled
        self._user_cancelled.discard(task_id)
        if task is None or self._quitting:
            return
        state = task["state"]
        if state == "cancelled" and asked_to_cancel:
            return  # the user's own cancel is no news
        title = self.window.title_of(task.get("task", ""))
        body = ""
        if state == "failed" and task.get("error"):
            body = str(task["error"].get("message", ""))
        self.window.notify_finished(task_id, f"{title} {state}", body, failed=state == "failed")

    def _on_window_rerun_requested(self, task_id: str) -> None:
        task = self.model.task_by_id(task_id)
        if task is not None:  # the same arguments and the same time limit
            timeout = task.get("timeout")
            self._spawn(self._submit(task["task"], dict(task.get("args") or {}),
                                     timeout if isinstance(timeout, int | float) else None))

    def _on_window_clear_finished_requested(self) -> None:
        self.removal.commit()
        ids = self.model.finished_ids()
        self.model.remove_tasks(ids)
        self._spawn(self._forget(ids))

    def _on_window_remove_requested(self, ids: list[str]) -> None:
        """Delete (the key) on finished rows: gone from the table now, from the ledger once
        the undo window has passed."""
        taken = self.removal.remove(ids)
        if taken:
            self.window.offer_undo(f"Removed {len(taken)} task(s) from the history.")

    def _on_window_undo_requested(self) -> None:
        ids = self.removal.undo()
        if ids:
            self.window.show_status(f"Restored {len(ids)} task(s).")
            if len(ids) == 1:
                self.window.select_task(ids[0])

    async def _forget(self, ids: list[str], *, quiet: bool = False) -> None:
        """Delete cleared tasks from the ledger too, so they stay gone after a restart
        (`quiet`: a removal the status bar told of already; only a failure is said)."""
        for task_id in ids:
            try:
                await self.bridge.delete(task_id)
            except Exception as exc:
                self.window.show_error(f"Could not delete a task: {exc}")
                return
        if not quiet:
            self.window.show_status(f"Cleared {len(ids)} finished task(s).")

    async def _fetch_page(self, text: str, states: list[str], before: int | None) -> None:
        """A page of the history (a search's, or the next as the table scrolls)."""
        try:
            tasks, cursor = await self.bridge.page(text, states, before)
        except ApiError as exc:
            self.model.page_failed(text, states, exc.message)
            self.window.show_status(f"Search: {(exc.fields or {}).get('q') or exc.message}")
            return
        except Exception as exc:
            self.model.page_failed(text, states, str(exc))
            return
        self.model.add_page(text, states, tasks, cursor)

    def _schedule_title(self, *_: object) -> None:
        if not self._title_timer.isActive():  # a throttle, not a debounce: progress is steady
            self._title_timer.start()

    def _update_title(self) -> None:
        states = [t["state"] for t in self.model.all_tasks() if t["state"] in ("running", "queued")]
        running, queued = states.count("running"), states.count("queued")
        parts = [f"{running} running"] if running else []
        if queued:
            parts.append(f"{queued} queued")
        remote = self.monitor.remote
        title = f"Herald on {remote.name}" if remote is not None else "Herald"
        self.window.setWindowTitle(title + (" — " + " · ".join(parts) if parts else ""))

    def _on_local_server_new_connection(self) -> None:
        assert self._local_server is not None
        sock = self._local_server.nextPendingConnection()
        sock.readyRead.connect(lambda: (sock.readAll(), self.window.bring_to_front()))
        sock.disconnected.connect(sock.deleteLater)

    # --------------------------------------------------------------- servers

    def _use(self, name: str) -> None:
        """Point the monitor and the window at `name` (THIS_COMPUTER or a saved server);
        nothing is started or stopped here."""
        server = self.servers.get(name) if name != THIS_COMPUTER else None
        token = (self.servers.token(name) or "") if server is not None else ""
        self.monitor.use_remote(server, token)
        if server is None:
            self.window.set_server("")
        else:
            self.window.set_server(server.name, server.url, sign_in_works=server.is_loopback,
                                   files_here=server.is_loopback)  # fmt: skip
        self.window.set_servers(self.servers.names(), name if server is not None else "")
        self._update_title()

    def switch_to(self, name: str, *, again: bool = False) -> None:
        """Use another Herald: stop talking to this one (stopping this computer's services
        if the app runs them: their running tasks are put back in the queue, for the next
        time), empty the table, and connect to `name` (THIS_COMPUTER: start our own).
        `again`: even if it is the one in use (its saved URL or token changed)."""
        if self._quitting:
            return
        current = self.monitor.remote.name if self.monitor.remote is not None else THIS_COMPUTER
        switching = self._switching is not None and not self._switching.done()
        if name == current and not again and not switching:
            self.window.set_servers(self.servers.names(), current)  # (its check mark back)
            return
        self.servers.set_current(name)
        self._switching = task = asyncio.ensure_future(self._switch(name, self._switching))
        self._tasks.add(task)
        task.add_done_callback(self._on_task_done)

    async def _switch(self, name: str, before: asyncio.Task[None] | None) -> None:
        if before is not None and not before.done():
            await asyncio.wait({before})
        label = name or "this computer"
        self.window.show_status(f"Connecting to {label}…", 0)
        self.window.set_loading(True)
        doomed = self.removal.pending()  # removals still undoable: final now, on this server
        if doomed:
            with QSignalBlocker(self.removal):  # deleted here, before the bridge closes
                self.removal.commit()
            self.window.hide_undo()
            await self._forget(doomed, quiet=True)
        await self.bridge.close()
        self.bridge.forget_position()  # the next server's seqs are its own
        if self.monitor.owns_services:
            self.window.show_status("Stopping this computer's services…", 0)
            stop = asyncio.ensure_future(self.monitor.stop())
            await asyncio.sleep(0)
            self._hurry_worker()  # running tasks go back in the queue at once
            try:
                await asyncio.wait_for(stop, STOP_WAIT)
            except TimeoutError:
                log.error("the services did not stop within %.0f s", STOP_WAIT)
        self.model.forget_all()
        self.window.hide_failure()
        self._use(name)
        self.window.show_status(f"Connecting to {label}…", 0)
        await self.monitor.start()

    def open_server_dialog(self) -> None:
        """File → Connect to server…: the dialog, without blocking the loop (`open()`)."""
        if self.server_dialog is not None:
            self.server_dialog.raise_()
            self.server_dialog.activateWindow()
            return
        current = self.monitor.remote.name if self.monitor.remote is not None else ""
        saved = [{"name": s.name, "url": s.url, "ca_file": s.ca_file}
                 for s in self.servers.servers()]  # fmt: skip
        box = ServerDialog(saved, current, self.window)
        box.test_requested.connect(lambda values: self._spawn(self._check(box, values)))
        box.connect_requested.connect(
            lambda values: self._spawn(self._check(box, values, connect=True)))
        box.remove_requested.connect(self._on_server_dialog_remove_requested)
        box.finished.connect(lambda _result: self._on_server_dialog_finished(box))
        self.server_dialog = box
        box.open()

    def _on_server_dialog_finished(self, box: ServerDialog) -> None:
        if self.server_dialog is box:
            self.server_dialog = None
        box.deleteLater()

    def _on_server_dialog_remove_requested(self, name: str) -> None:
        in_use = self.monitor.remote is not None and self.monitor.remote.name == name
        self.servers.remove(name)
        self.window.set_servers(self.servers.names(), "" if in_use else (
            self.monitor.remote.name if self.monitor.remote is not None else ""))  # fmt: skip
        if in_use:
            self.switch_to(THIS_COMPUTER)

    async def _check(self, box: ServerDialog, values: dict[str, str], *,
                     connect: bool = False) -> None:  # fmt: skip
        """The dialog's Test (or Connect): check the server and say how it went; Connect
        saves it and switches to it once the check passed, and saves nothing otherwise."""
        name, token = values["name"], values["token"]
        saved = self.servers.get(name)
        if not token and saved is not None:
            token = self.servers.token(name) or ""  # left empty: the saved one
        try:
            url = normalize_url(values["url"])
        except UrlProblem as exc:
            box.show_failed(str(exc))
            return
        try:
            found = await check_server(url, token, values["ca_file"])
        except ServerCheckError as exc:
            box.show_failed(exc.message)
            return
        said = (f"Herald {found.version} answers at {found.api}; the token signs in as "
                f"{found.principal}.")  # fmt: skip
        if not connect:
            box.show_passed(said)
            return
        self.servers.save(Server(name, url, values["ca_file"]), token)
        box.show_passed(said)
        box.accept()
        self.switch_to(name, again=True)  # (its URL or token may have changed)

    # --------------------------------------------------------------- intents

    async def _submit(self, name: str, args: dict[str, Any],
                      timeout: float | None = None) -> None:  # fmt: skip
        self.window.set_submitting(True)
        try:
            task = await self.bridge.submit(name, args, timeout)
        except ApiError as exc:
            self.window.show_field_errors(exc.fields or {}, exc.message)
            return
        except Exception as exc:  # the service is down: say so, keep the form as it is
            self.window.show_field_errors({}, f"Could not submit: {exc}")
            return
        finally:
            self.window.set_submitting(False)
        self.model.upsert(task)
        self.window.select_task(task["id"])
        self.window.show_status(f"Submitted {self.window.title_of(name)}.")

    async def _fetch(self, task_id: str) -> None:
        """A task the model heard of only by an event (submitted elsewhere meanwhile)."""
        with contextlib.suppress(Exception):
            self.model.upsert(await self.bridge.client.get(task_id))

    async def _cancel(self, ids: list[str]) -> None:
        stopping: list[dict[str, Any]] = []  # running tasks asked to stop
        cancelled = 0
        self._user_cancelled.update(ids)  # their end is no news: no notification
        for task_id in ids:
            try:
                task = await self.bridge.cancel(task_id)
            except Exception as exc:
                self.window.show_error(f"Could not cancel: {exc}")
                return
            self.model.upsert(task)
            if task.get("state") == "running":
                stopping.append(task)
            elif task.get("state") == "cancelled":
                cancelled += 1
        self.window.show_status(self._cancel_status(stopping, cancelled))

    def _cancel_status(self, stopping: list[dict[str, Any]], cancelled: int) -> str:
        """What cancelling did: queued tasks are cancelled at once; a running one is asked
        to stop, and stopped by force after its catalog's cancel_grace if it does not."""
        parts = []
        if len(stopping) == 1:
            task = stopping[0]
            spec = self.window.spec_of(task.get("task", "")) or {}
            grace = spec.get("cancel_grace")
            text = cancel_text(float(grace) if isinstance(grace, int | float) else None)
            parts.append(f"{self.window.title_of(task.get('task', ''))}: {text}.")
        elif stopping:
            graces = {(self.window.spec_of(t.get("task", "")) or {}).get("cancel_grace")
                      for t in stopping}  # fmt: skip
            grace = graces.pop() if len(graces) == 1 else None
            within = (f"within {format_seconds(grace)}" if isinstance(grace, int | float)
                      else "in time")  # fmt: skip
            parts.append(f"Asked {len(stopping)} running tasks to stop; any that does not stop "
                         f"at a checkpoint {within} is stopped by force.")  # fmt: skip
        if cancelled:
            parts.append(f"Cancelled {cancelled} task(s).")
        return " ".join(parts) or "Nothing to cancel: the task(s) had finished."

    async def _restart(self) -> None:
        self.window.hide_failure()
        self.window.show_status("Restarting services…", 0)
        await self.bridge.close()
        await self.monitor.restart()

    async def _check_sign_in(self, server: Server) -> None:
        """Whether the browser's sign-in works with a server on another machine: its
        one-time links must name the server's own address (a server that names 127.0.0.1
        means its own machine's loopback). Asked once per connection; the ticket it makes
        is never used and lapses in a minute."""
        works = False
        try:
            status, body = await self.bridge.client.request("POST", "/api/login-tickets")
            if status == 201 and isinstance(body, dict):
                link = urlsplit(str(body.get("url", "")))
                works = (link.hostname or "").lower() == (urlsplit(server.url).hostname or "")
        except Exception as exc:  # noqa: BLE001 (then it is said not to work)
            log.info("cannot ask %s for a sign-in link: %s", server.name, exc)
        if self.monitor.remote is server:
            self.window.set_server(server.name, server.url, sign_in_works=works,
                                   files_here=server.is_loopback)  # fmt: skip

    async def _open_in_browser(self) -> None:
        """Open the task page in the user's browser through a fresh one-time sign-in link
        (as `herald open`), saying in the status bar how it went: no dialog."""
        from embedded.cli import open_in_browser

        try:
            status, body = await self.bridge.client.request("POST", "/api/login-tickets")
            if status != 201 or not isinstance(body, dict) or "url" not in body:
                error = body.get("error") if isinstance(body, dict) else None
                raise RuntimeError(error.get("message") if isinstance(error, dict)
                                   else f"HTTP {status}")  # fmt: skip
            # The browser command may not return at once: in a thread of its own (not the
            # loop's executor: under qasync that is a QThread, left running at exit).
            loop = asyncio.get_running_loop()
            done: asyncio.Future[bool] = loop.create_future()
            url = str(body["url"])

            def launch() -> None:
                opened = open_in_browser(url)
                with contextlib.suppress(RuntimeError):  # the app has quit meanwhile
                    loop.call_soon_threadsafe(lambda: done.done() or done.set_result(opened))

            threading.Thread(target=launch, name="open-in-browser", daemon=True).start()
            opened = await done
        except Exception as exc:  # noqa: BLE001 (whatever it was, the user is told)
            self.window.show_status(f"Could not open the task page: {exc}")
            return
        self.window.show_status("Opened the task page in your browser" if opened else
                                "No browser could be started (set BROWSER, or run "
                                "`herald open --print`)")  # fmt: skip

    async def _save_output(self, task_id: str, path: str) -> None:
        """Write all of a task's output (from the event log, not the model's latest lines)
        to `path`, and say how it went."""
        try:
            lines = await self.bridge.client.output(task_id)
            with open(path, "w", encoding="utf-8") as f:
                for line in lines:
                    f.write(line + "\n")
        except Exception as exc:  # noqa: BLE001 (whatever it was, the user is told)
            text = f"Could not save the output to {path}: {exc}"
        else:
            text = f"Saved {len(lines):,} lines to {path}"
        self.window.detail.show_output_saved(text)
        self.window.show_status(text)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._on_task_done)

    def _on_task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background work failed", exc_info=task.exception())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main(data_dir: Path, argv: list[str] | None = None, *, self_check: bool = False,
         server: str | None = None) -> int:  # fmt: skip
    """Run the desktop app for `data_dir` (on the saved server `server`, see DesktopApp);
    returns the exit status."""
    logging.basicConfig(level=os.environ.get("HERALD_LOG_LEVEL", "WARNING").upper(),
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")  # fmt: skip
    paint_on_the_gui_thread()
    QGuiApplication.setHighDpiScaleFactorRoundingPolicy(
        Qt.HighDpiScaleFactorRoundingPolicy.PassThrough)  # fmt: skip
    app = QApplication.instance() or QApplication(argv if argv is not None else sys.argv)
    app.setApplicationName("Herald")
    app.setOrganizationName("Herald")
    app.setApplicationVersion(herald_version())
    app.setDesktopFileName("herald")
    app.setWindowIcon(app_icon())
    app.setQuitOnLastWindowClosed(False)  # quitting goes through DesktopApp.quit
    key = instance_key(data_dir)
    if not self_check and ask_running_instance(key):
        print("Herald is already open; brought it to the front.", file=sys.stderr)
        return 0
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    if self_check:  # a smoke test is not a user's session: remember nothing of it
        scratch = tempfile.mkdtemp(prefix="herald-self-check-")
        settings = QSettings(os.path.join(scratch, "settings.ini"), QSettings.Format.IniFormat)
    else:
        settings = QSettings()
    try:
        desktop = DesktopApp(data_dir, settings, self_check=self_check, server=server)
    except KeyError as exc:  # --server NAME of no saved server
        print(f"herald: {exc.args[0]}", file=sys.stderr)
        return 2
    if not self_check:
        desktop.listen_for_second_launch(key)
    # SIGTERM or SIGINT (a session logout, Ctrl-C in the terminal): quit cleanly, without
    # questions; the worker puts running tasks back in the queue.
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, lambda: desktop._spawn(desktop.quit(ask=False)))
    if self_check:  # never hang a smoke test
        QTimer.singleShot(60_000, lambda: (setattr(desktop, "exit_code", 1),
                                           desktop._spawn(desktop.quit(ask=False))))  # fmt: skip
    with loop:
        try:
            code = loop.run_until_complete(desktop.run())
        except RuntimeError as exc:  # Qt left its loop by itself: the display went away
            log.error("the window system went away (%s); stopping", exc)
            code = 1
    if self_check:
        print("self-check (seconds since launch): "
              + ", ".join(f"{k} {v:.2f}" for k, v in desktop.timings.items()),
              file=sys.stderr)  # fmt: skip
    with contextlib.suppress(Exception):
        loop.close()
    if self_check:
        shutil.rmtree(scratch, ignore_errors=True)
    return code


