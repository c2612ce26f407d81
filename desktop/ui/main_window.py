"""The main window: catalog and form on the left, the task table and the detail pane on the
right, service and connection lights in the status bar, the log dock at the bottom.

It renders models and forwards intents as signals; it never talks to a service itself.

Signals:
    run_requested(name, args, timeout): the user asked to run a task (timeout: each
        attempt's time limit in seconds, None for the task's default).
    cancel_requested(ids): cancel these tasks.
    rerun_requested(id): run this task again with the same arguments.
    clear_finished_requested(): remove finished tasks from the list (asked first, unless
        the user said not to ask again).
    remove_requested(ids): Delete on finished rows: remove these (with an undo).
    undo_requested(): the status bar's "Undo" of the last removal.
    restart_services_requested(): the "Restart services" action.
    open_in_browser_requested(): the "Open in browser" action (the task page, signed in).
    connect_dialog_requested(): File → Connect to server… (the app opens the dialog).
    server_chosen(name): File → Switch to → a saved server's name, or "" for this computer.
    quit_requested(): the user asked to quit (window closed, menu, tray, Ctrl+Q).
"""

from __future__ import annotations

import json
from typing import Any

from PySide6.QtCore import (
    QByteArray,
    QItemSelectionModel,
    QModelIndex,
    QSettings,
    Qt,
    QTimer,
    Signal,
)
from PySide6.QtGui import QAction, QCloseEvent, QGuiApplication, QIcon, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDockWidget,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidgetItem,
    QMainWindow,
    QMenu,
    QMessageBox,
    QPushButton,
    QScrollArea,
    QSplitter,
    QStyle,
    QSystemTrayIcon,
    QTableView,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from desktop.task_model import TaskFilterProxy, TaskModel
from desktop.ui.about import show_about
from desktop.ui.activity_view import ActivityView
from desktop.ui.catalog_list import CatalogList
from desktop.ui.detail_pane import DetailPane
from desktop.ui.empty_state import EmptyState, hint_text
from desktop.ui.error_view import can_overwrite
from desktop.ui.log_dock import LogDock
from desktop.ui.progress_delegate import ProgressDelegate
from desktop.ui.status_bar import ServiceLights
from desktop.ui.task_form import TaskForm

# How long a status-bar message stays (ms): news goes stale, an error is read for longer.
STATUS_MS = 8_000
ERROR_STATUS_MS = 20_000
# The left column (catalog and form) at most this share of a small window's width.
LEFT_SHARE = 0.4
TABLE_SHARE = 0.5  # the least share of a short right column's height the table keeps
DETAIL_MIN = 120  # px of the detail in a short window (it scrolls)
DETAIL_SHARE = 0.45  # of the window's height, the most the detail's minimum may claim
SHORT_HEIGHT = 600  # px of window height below which the table comes first
LEFT_WIDTH = 380  # its width in a window of the default size
LOG_DOCK_SHARE = 0.25  # the log dock, when opened, at most this share of the height

STATE_FILTERS = [
    ("All tasks", set()),
    ("Active", {"queued", "running"}),
    ("Running", {"running"}),
    ("Queued", {"queued"}),
    ("Succeeded", {"succeeded"}),
    ("Failed", {"failed"}),
    ("Cancelled", {"cancelled"}),
]


SEARCH_DEBOUNCE_MS = 250
ASK_BEFORE_CLEAR = "history/ask_before_clear"  # QSettings: False once "don't ask again"


class MainWindow(QMainWindow):
    run_requested = Signal(str, dict, object)
    cancel_requested = Signal(list)
    rerun_requested = Signal(str)
    clear_finished_requested = Signal()
    remove_requested = Signal(list)
    undo_requested = Signal()
    restart_services_requested = Signal()
    open_in_browser_requested = Signal()
    connect_dialog_requested = Signal()
    server_chosen = Signal(str)
    quit_requested = Signal()

    def __init__(self, model: TaskModel, services: tuple[str, ...], log_dir: str,
                 icon: QIcon, settings: QSettings) -> None:  # fmt: skip
        super().__init__()
        self.model = model
        self.identity: dict[str, Any] | None = None  # GET /api/me, once the bridge has it
        self.settings = settings
        self._catalog: dict[str, dict[str, Any]] = {}
        self._notified_task: str | None = None
        self.notifier: Any = None  # notifications without a tray (see set_notifier)
        self._really_closing = False
        self._failure_prefix = "Herald's services stopped working: "
        self.setWindowTitle("Herald")
        self.setWindowIcon(icon)
        self.setObjectName("main_window")

        # ---- left: catalog and form
        self.catalog_list = CatalogList()
        self.catalog_list.setAccessibleName("Tasks you can run")
        self.catalog_list.setToolTip("Drop a file or folder on a task to open its form with it")
        self.catalog_list.currentItemChanged.connect(self._on_catalog_list_current_item_changed)
        self.catalog_list.has_path_param = self._has_path_param
        self.catalog_list.path_dropped.connect(self._on_catalog_list_path_dropped)
        self.form = TaskForm(settings=settings)
        self.form.run_requested.connect(self.run_requested)
        self.left = left = QSplitter(Qt.Orientation.Vertical)
        left.setObjectName("left_splitter")
        left.addWidget(_titled("Catalog", self.catalog_list))
        left.addWidget(self.form)
        # The form gets most of the height, and both give way when the log dock opens.
        left.setStretchFactor(0, 1)
        left.setStretchFactor(1, 3)
        left.setChildrenCollapsible(False)
        left.setSizes([170, 530])

        # ---- right: filters, table, details
        self.state_filter = QComboBox()
        for label, _states in STATE_FILTERS:
            self.state_filter.addItem(label)
        self.state_filter.setAccessibleName("Show tasks in state")
        self.state_filter.currentIndexChanged.connect(self._on_state_filter_changed)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Filter by task, message, id or arguments  (Ctrl+F)")
        self.search.setClearButtonEnabled(True)
        self.search.setAccessibleName("Filter tasks")
        self.search.textChanged.connect(self._on_search_text_changed)
        # The server searches the whole history once the user pauses typing.
        self._search_timer = QTimer(self, singleShot=True, interval=SEARCH_DEBOUNCE_MS)
        self._search_timer.timeout.connect(self._on_search_timer_timeout)
        self.clear_box: QMessageBox | None = None  # "Clear finished?" while it is open

        self.proxy = TaskFilterProxy(self)
        self.proxy.setSourceModel(model)
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setObjectName("task_table")
        self.table.setAccessibleName("Tasks")
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(TaskModel.Column.SUBMITTED, Qt.SortOrder.DescendingOrder)
        self.table.verticalHeader().hide()
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.table.customContextMenuRequested.connect(self._on_table_context_menu_requested)
        self.delegate = ProgressDelegate(self.table)
        self.table.setItemDelegateForColumn(TaskModel.Column.PROGRESS, self.delegate)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        for col, width in enumerate((150, 112, 140, 240, 90, 80, 160)):  # State: and its icon
            header.resizeSection(col, width)
        # The message takes what room there is, so the table fits without scrolling sideways.
        header.setSectionResizeMode(TaskModel.Column.MESSAGE, QHeaderView.ResizeMode.Stretch)
        self.table.selectionModel().selectionChanged.connect(self._on_table_selection_changed)
        # A small window still shows a few rows: the detail pane gives way first.
        self.table.setMinimumHeight(header.sizeHint().height()
                                    + 2 * self.table.verticalHeader().defaultSectionSize())
        self.table.doubleClicked.connect(lambda _i: self.detail.tabs.setCurrentIndex(0))
        self._loading = True  # until the history is loaded: set_loading(False)
        self.empty_state = EmptyState(self.table)
        for changed in (self.proxy.rowsInserted, self.proxy.rowsRemoved,
                        self.proxy.modelReset, self.proxy.layoutChanged):  # fmt: skip
            changed.connect(self._update_empty_state)

        self.detail = DetailPane()
        self.detail.rerun_requested.connect(self._rerun)
        self.detail.edit_requested.connect(self._edit_rerun)
        self.detail.overwrite_requested.connect(self._overwrite_rerun)
        self.detail.open_failed.connect(self.show_status)
        filters = QHBoxLayout()
        filters.addWidget(self.state_filter)
        filters.addWidget(self.search, 1)
        top = QWidget()
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        top_layout.addLayout(filters)
        top_layout.addWidget(self.table)
        # The detail scrolls rather than squeezing the table in a short window (a failed
        # task's error view, buttons and tabs need more height than 420 px leave).
        detail_box = QScrollArea()
        detail_box.setObjectName("detail_box")
        detail_box.setWidgetResizable(True)
        detail_box.setFrameShape(QScrollArea.Shape.NoFrame)
        detail_box.setWidget(self.detail)
        self._detail_box = detail_box
        self.right_splitter = right = QSplitter(Qt.Orientation.Vertical)
        right.setObjectName("right_splitter")
        right.addWidget(top)
        right.addWidget(detail_box)
        right.setStretchFactor(0, 3)
        right.setStretchFactor(1, 2)

        self.main_splitter = QSplitter(Qt.Orientation.Horizontal)
        self.main_splitter.setObjectName("main_splitter")
        self.main_splitter.addWidget(left)
        self.main_splitter.addWidget(right)
        # Both give way as the window narrows, the table much less than the form, and the
        # catalog and form column may be collapsed by dragging the handle to the left.
        self.main_splitter.setStretchFactor(0, 1)
        self.main_splitter.setStretchFactor(1, 3)
        self.main_splitter.setCollapsible(0, True)
        self.main_splitter.setCollapsible(1, False)
        self.main_splitter.setSizes([LEFT_WIDTH, 860])
        self._splitters = [self.main_splitter, left, right]

        # ---- banner for a failed start, above everything
        self.banner = QLabel()
        self.banner.setWordWrap(True)
        self.banner.setStyleSheet("QLabel { background: #d0342c; color: white; padding: 6px; }")
        self.banner.hide()
        self.banner_button = QPushButton("Restart services")
        self.banner_button.clicked.connect(self.restart_services_requested)
        self.banner_button.hide()
        self.notice = QLabel()
        self.notice.setWordWrap(True)
        self.notice.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.notice.setStyleSheet("QLabel { background: #f0c04a; color: black; padding: 6px; }")
        self.notice.hide()
        banner_row = QHBoxLayout()
        banner_row.addWidget(self.banner, 1)
        banner_row.addWidget(self.banner_button)
        central = QWidget()
        central_layout = QVBoxLayout(central)
        central_layout.setContentsMargins(6, 6, 6, 0)
        central_layout.addLayout(banner_row)
        central_layout.addWidget(self.notice)
        central_layout.addWidget(self.main_splitter, 1)
        self.setCentralWidget(central)

        # ---- status bar and log dock
        self.lights = ServiceLights(services)
        self.status_message = QLabel("Starting services…")
        self.status_message.setTextFormat(Qt.TextFormat.PlainText)
        self.statusBar().addWidget(self.status_message, 1)
        # Beside the status text until the removal is undone or final (whatever the text).
        self.undo_button = QPushButton("Undo removal")
        self.undo_button.setFlat(True)
        self.undo_button.setAccessibleName("Undo the removal")
        self.undo_button.clicked.connect(self.undo_requested)
        self.undo_button.hide()
        self.statusBar().addWidget(self.undo_button)
        # Which Herald the window shows: this computer's own, or a remote server's.
        self.server_label = QLabel("This computer")
        self.server_label.setObjectName("server_label")
        self.server_label.setToolTip("The tasks are this computer's own (File → Connect to "
                                     "server… to use a remote Herald)")  # fmt: skip
        self.statusBar().addPermanentWidget(self.server_label)
        self.statusBar().addPermanentWidget(self.lights)
        # A message goes when it is stale; one shown meanwhile starts the clock again.
        self._status_timer = QTimer(self)
        self._status_timer.setSingleShot(True)
        self._status_timer.timeout.connect(self.status_message.clear)
        self.log_dock = LogDock(services, log_dir, self)
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, self.log_dock)
        self.log_dock.hide()
        self.activity_view = ActivityView(title_of=self.title_of)
        self.activity_dock = QDockWidget("Activity", self)
        self.activity_dock.setObjectName("activity_dock")
        self.activity_dock.setWidget(self.activity_view)
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, self.activity_dock)
        self.tabifyDockWidget(self.log_dock, self.activity_dock)
        self.activity_dock.hide()
        model.task_finished.connect(self.activity_view.note_task_finished)
        self.log_dock.visibilityChanged.connect(self._on_log_dock_visibility_changed)

        self._make_actions()
        self._make_tray(icon)
        self._update_actions()
        self.restore_state()
        self._update_empty_state()

    # ------------------------------------------------------------- actions

    def _action(self, text: str, shortcut: QKeySequence | str | None, slot: Any,
                icon: QStyle.StandardPixmap | None = None, tip: str = "") -> QAction:  # fmt: skip
        action = QAction(text, self)
        if shortcut:
            action.setShortcut(QKeySequence(shortcut))
        if icon is not None:
            action.setIcon(self.style().standardIcon(icon))
        action.setToolTip(tip or text.replace("&", ""))
        action.triggered.connect(slot)
        self.addAction(action)
        return action

    def _make_actions(self) -> None:
        sp = QStyle.StandardPixmap
        self.run_action = self._action("&Run", "Ctrl+Return", self.form.submit,
                                       sp.SP_MediaPlay, "Run the task with these arguments")
        self.cancel_action = self._action("&Cancel", None,
                                          self._on_cancel_triggered, sp.SP_MediaStop,
                                          "Cancel the selected tasks (Delete)")
        self.delete_action = self._action("&Delete", QKeySequence.StandardKey.Delete,
                                          self._on_delete_triggered, None,
                                          "Cancel the selected running or queued tasks; "
                                          "remove the selected finished ones (with an undo)")
        self.rerun_action = self._action("Run a&gain", "Ctrl+R", self._on_rerun_triggered,
                                         sp.SP_BrowserReload,
                                         "Run the selected task again with the same arguments")
        self.edit_rerun_action = self._action(
            "&Edit and run again…", "Ctrl+E", lambda: self._for_selected(self._edit_rerun),
            None, "Open the selected task's form with its arguments, to change and run them")
        self.overwrite_rerun_action = self._action(
            "Run again with &Overwrite", None,
            lambda: self._for_selected(self._overwrite_rerun), None,
            "Run the selected task again, replacing the destination that exists")
        self.copy_action = self._action("Cop&y result", "Ctrl+Shift+C", self._on_copy_triggered,
                                        sp.SP_DialogSaveButton,
                                        "Copy the selected task's result")
        self.clear_action = self._action("C&lear finished", "Ctrl+Shift+Delete",
                                         self._on_clear_triggered, sp.SP_DialogResetButton,
                                         "Delete the finished tasks in the list")
        self.restart_action = self._action("&Restart services", None,
                                           self.restart_services_requested)
        self.open_browser_action = self._action(
            "Open in &browser", None, self.open_in_browser_requested, None,
            "Open the task page in your browser, signed in through a one-time link")
        self.connect_action = self._action(
            "Connect to &server…", None, self.connect_dialog_requested, None,
            "Use a Herald that runs elsewhere (its URL and a token) instead of this "
            "computer's own")  # fmt: skip
        self.servers_menu = QMenu("S&witch to", self)
        self.servers_menu.setObjectName("servers_menu")
        self.set_servers([], "")
        # Ctrl+Q by name: the platform's standard Quit key is empty under some window
        # managers (and offscreen), and Ctrl is Cmd on macOS anyway.
        self.quit_action = self._action("&Quit", "Ctrl+Q", self.quit_requested)
        self.find_action = self._action("&Find", QKeySequence.StandardKey.Find,
                                        self.search.setFocus)
        self.logs_action = self.log_dock.toggleViewAction()
        self.logs_action.setText("Service &logs")
        self.logs_action.setShortcut(QKeySequence("Ctrl+L"))
        self.activity_action = self.activity_dock.toggleViewAction()
        self.activity_action.setText("&Activity")
        self.activity_action.setShortcut(QKeySequence("Ctrl+Shift+A"))
        self.activity_action.setToolTip("Tasks finished over time, and how long each task "
                                        "type runs (Ctrl+Shift+A)")
        # Shown behind the logs' tab, it comes to the front.
        self.activity_action.triggered.connect(
            lambda shown: shown and self.activity_dock.raise_())
        self.about_action = self._action("&About Herald", None,
                                         lambda: show_about(self, self.identity))
        # The form's own Ctrl+Return works only while it has focus; this action works anywhere
        # in the window, and two shortcuts on one key would cancel each other out.
        self.run_action.setShortcuts([QKeySequence("Ctrl+Return"), QKeySequence("Ctrl+Enter")])
        self.run_action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        for shortcut in self.form.run_shortcuts:
            shortcut.setEnabled(False)

        menu = self.menuBar()
        file_menu = menu.addMenu("&File")
        file_menu.setToolTipsVisible(True)  # a disabled action says why
        file_menu.addAction(self.connect_action)
        file_menu.addMenu(self.servers_menu)
        file_menu.addSeparator()
        file_menu.addAction(self.open_browser_action)
        file_menu.addSeparator()
        file_menu.addAction(self.quit_action)
        tasks_menu = menu.addMenu("&Tasks")
        for a in (self.run_action, self.cancel_action, self.delete_action, self.rerun_action,
                  self.edit_rerun_action, self.overwrite_rerun_action, self.copy_action,
                  self.clear_action):  # fmt: skip
            tasks_menu.addAction(a)
        view_menu = menu.addMenu("&View")
        view_menu.setToolTipsVisible(True)
        view_menu.addAction(self.find_action)
        view_menu.addAction(self.logs_action)
        view_menu.addAction(self.activity_action)
        services_menu = menu.addMenu("&Services")
        services_menu.setToolTipsVisible(True)
        services_menu.addAction(self.restart_action)
        help_menu = menu.addMenu("&Help")
        help_menu.addAction(self.about_action)

        bar = QToolBar("Tasks")
        bar.setObjectName("task_toolbar")
        bar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        for a in (self.cancel_action, self.rerun_action, self.copy_action, self.clear_action):
            bar.addAction(a)
        bar.addSeparator()
        bar.addAction(self.logs_action)
        self.addToolBar(bar)

    def _make_tray(self, icon: QIcon) -> None:
        self.tray: QSystemTrayIcon | None = None
        if not QSystemTrayIcon.isSystemTrayAvailable():
            return
        self.tray = QSystemTrayIcon(icon, self)
        self.tray.setToolTip("Herald")
        menu = QMenu(self)
        menu.addAction("Show Herald", self.bring_to_front)
        menu.addSeparator()
        menu.addAction(self.quit_action)
        self.tray.setContextMenu(menu)
        self.tray.activated.connect(self._on_tray_activated)
        self.tray.messageClicked.connect(self._on_tray_message_clicked)
        self.tray.show()

    # -------------------------------------------------------------- updates

    def set_catalog(self, specs: list[dict[str, Any]]) -> None:
        current = self.catalog_list.currentItem()
        keep = current.data(Qt.ItemDataRole.UserRole) if current else None
        self._catalog = {s["name"]: s for s in specs}
        self.catalog_list.clear()
        for spec in specs:
            item = QListWidgetItem(spec["title"])
            item.setData(Qt.ItemDataRole.UserRole, spec["name"])
            item.setToolTip(f"{spec['name']}\n\n{spec.get('description', '')}".strip())
            self.catalog_list.addItem(item)
            if spec["name"] == keep:
                self.catalog_list.setCurrentItem(item)
        if self.catalog_list.currentItem() is None and specs:
            self.catalog_list.setCurrentRow(0)

    def select_catalog_task(self, name: str) -> None:
        for i in range(self.catalog_list.count()):
            if self.catalog_list.item(i).data(Qt.ItemDataRole.UserRole) == name:
                self.catalog_list.setCurrentRow(i)
                return

    def title_of(self, name: str) -> str:
        spec = self._catalog.get(name)
        return spec["title"] if spec else name

    def spec_of(self, name: str) -> dict[str, Any] | None:
        """The catalog entry of the task `name`, or None if the catalog has none."""
        return self._catalog.get(name)

    def select_task(self, task_id: str) -> None:
        row = self.model.row_of(task_id)
        if row is None:
            return
        index = self.proxy.mapFromSource(self.model.index(row, 0))
        if not index.isValid():  # filtered out: show everything
            self.state_filter.setCurrentIndex(0)
            self.search.clear()
            index = self.proxy.mapFromSource(self.model.index(row, 0))
        self.table.selectionModel().setCurrentIndex(
            index, QItemSelectionModel.SelectionFlag.ClearAndSelect
            | QItemSelectionModel.SelectionFlag.Rows)  # fmt: skip
        self.table.scrollTo(index)

    def selected_ids(self) -> list[str]:
        rows = self.table.selectionModel().selectedRows()
        return [self.proxy.data(i, TaskModel.TaskIdRole) for i in rows]

    def refresh_details(self, task_ids: list[str]) -> None:
        """Re-render the detail pane if it shows one of `task_ids` (the tasks a flush of the
        model changed: all of them under a stream)."""
        if self.detail.task_id is not None and self.detail.task_id in task_ids:
            self.refresh_detail(self.detail.task_id)

    def refresh_detail(self, task_id: str) -> None:
        """Re-render the detail pane if it shows `task_id` (called for every changed task,
        hundreds of times a second under load: it must cost nothing for the others)."""
        if task_id != self.detail.task_id:
            return
        self._show_detail(task_id)
        self._update_actions()

    def set_submitting(self, busy: bool) -> None:
        self.form.set_busy(busy)

    def show_field_errors(self, fields: dict[str, str], message: str = "") -> None:
        self.form.set_field_errors(fields)
        if message:
            self.show_error(message)

    def show_status(self, text: str, timeout_ms: int = STATUS_MS) -> None:
        """Say `text` in the status bar for `timeout_ms` (0: until the next message)."""
        self.status_message.setText(text)
        self.status_message.setToolTip(text)
        if timeout_ms > 0:
            self._status_timer.start(timeout_ms)
        else:
            self._status_timer.stop()

    def show_error(self, text: str) -> None:
        """Say what went wrong in the status bar, for longer than news."""
        self.show_status(text, ERROR_STATUS_MS)

    def set_loading(self, loading: bool) -> None:
        """Whether the task history is being loaded (the empty table says so)."""
        self._loading = loading
        self._update_empty_state()

    def offer_undo(self, text: str) -> None:
        """Say what was just removed, with an "Undo" beside it until `hide_undo`."""
        self.status_message.setText(text)
        self.undo_button.show()

    def hide_undo(self) -> None:
        self.undo_button.hide()

    def show_failure(self, message: str) -> None:
        """The services could not start or one gave up: say so, offer a restart."""
        self.set_loading(False)  # nothing is coming: the empty table must not say it is
        self.banner.setText(f"{self._failure_prefix}{message}")
        self.banner.show()
        self.banner_button.show()
        if self.logs_action.isEnabled():  # (a remote server's logs are not here)
            self.log_dock.show()

    def set_servers(self, names: list[str], current: str) -> None:
        """The File → Switch to menu: this computer, then each saved server; `current` (a
        name, "" for this computer) checked."""
        self.servers_menu.clear()
        for label, name in [("This computer", ""), *((n, n) for n in names)]:
            action = self.servers_menu.addAction(label)
            action.setCheckable(True)
            action.setChecked(name == current)
            action.setData(name)
            action.triggered.connect(lambda _checked=False, n=name: self.server_chosen.emit(n))

    def set_server(self, name: str, url: str = "", *, sign_in_works: bool = True,
                   files_here: bool = True) -> None:  # fmt: skip
        """Say which Herald the window shows (`name` "": this computer's own services), and
        disable what only makes sense for this computer's own, saying why (`files_here`:
        the server runs on this machine, so the files its results name are here)."""
        remote = bool(name)
        self.detail.result_view.files_on = "" if files_here else name
        if remote:
            self.server_label.setText(f"Server: {name}")
            self.server_label.setToolTip(f"The tasks are those of the Herald at {url}")
        else:
            self.server_label.setText("This computer")
            self.server_label.setToolTip("The tasks are this computer's own (File → Connect "
                                         "to server… to use a remote Herald)")  # fmt: skip
        self.restart_action.setEnabled(not remote)
        self.restart_action.setToolTip(
            f"{name}'s services run on the server: restart them there" if remote
            else "Restart services")  # fmt: skip
        self.logs_action.setEnabled(not remote)
        self.logs_action.setToolTip(
            f"The services' logs are on the server ({name}), not on this computer" if remote
            else "Show the services' logs (Ctrl+L)")  # fmt: skip
        if remote:
            self.log_dock.hide()
        self.open_browser_action.setEnabled(sign_in_works)
        self.open_browser_action.setToolTip(
            "Open the task page in your browser, signed in through a one-time link"
            if sign_in_works else
            f"The server's sign-in links are for its own machine (127.0.0.1): open "
            f"{url} there, or run `herald open` on the server")  # fmt: skip
        self.banner_button.setText("Connect again" if remote else "Restart services")
        self.form.set_paths_local(not remote)
        self._failure_prefix = (f"Cannot use the server {name}: " if remote
                                else "Herald's services stopped working: ")  # fmt: skip

    def set_identity(self, me: dict[str, Any]) -> None:
        """Who the app is signed in as, and what it may do (shown in the About box)."""
        self.identity = me

    def show_notice(self, message: str) -> None:
        """Something the user should know that did not stop Herald (a plug-in that could
        not be loaded, a token that had to be renewed): an amber line above the tasks."""
        text = self.notice.text()
        self.notice.setText(f"{text}\n{message}" if text else message)
        self.notice.show()

    def hide_failure(self) -> None:
        self.banner.hide()
        self.banner_button.hide()

    def set_notifier(self, notifier: Any) -> None:
        """Where notifications go when there is no tray: an object with
        `notify(task_id, summary, body, failed) -> bool` and a `clicked(task_id)` signal
        (desktop.notify.DesktopNotifications)."""
        self.notifier = notifier
        notifier.clicked.connect(self._on_notifier_clicked)

    def notify_finished(self, task_id: str, summary: str, body: str, failed: bool) -> bool:
        """A desktop notification when the window is not active (through the tray, else
        the notifier); clicking it selects the task. True if one was sent."""
        if self.isActiveWindow():
            return False
        if self.tray is not None:
            self._notified_task = task_id
            icon = (QSystemTrayIcon.MessageIcon.Warning if failed
                    else QSystemTrayIcon.MessageIcon.Information)  # fmt: skip
            self.tray.showMessage(summary, body or "Herald", icon, 8000)
            return True
        if self.notifier is not None:
            return bool(self.notifier.notify(task_id, summary, body, failed))
        return False

    def bring_to_front(self) -> None:
        if self.isMinimized():
            self.showNormal()
        self.show()
        self.raise_()
        self.activateWindow()

    # ------------------------------------------------------------- settings

    def save_state(self) -> None:
        s = self.settings
        s.setValue("window/geometry", self.saveGeometry())
        s.setValue("window/state", self.saveState())
        for splitter in self._splitters:
            s.setValue(f"window/{splitter.objectName()}", splitter.saveState())
        s.setValue("window/table_header", self.table.horizontalHeader().saveState())
        item = self.catalog_list.currentItem()
        if item is not None:
            s.setValue("window/catalog_task", item.data(Qt.ItemDataRole.UserRole))
        s.setValue("window/form_advanced", self.form.advanced_expanded())
        self.form.remember_values()
        s.sync()

    def restore_state(self) -> None:
        s = self.settings
        geometry = s.value("window/geometry")
        if isinstance(geometry, QByteArray) and not geometry.isEmpty():
            self.restoreGeometry(geometry)
        else:
            screen = QGuiApplication.primaryScreen()
            avail = screen.availableGeometry() if screen else None
            w, h = 1240, 760
            if avail is not None:
                w, h = min(w, avail.width() - 40), min(h, avail.height() - 40)
            self.resize(w, h)
        state = s.value("window/state")
        if isinstance(state, QByteArray):
            self.restoreState(state)
        for splitter in self._splitters:
            value = s.value(f"window/{splitter.objectName()}")
            if isinstance(value, QByteArray):
                splitter.restoreState(value)
        header = s.value("window/table_header")
        if isinstance(header, QByteArray):
            self.table.horizontalHeader().restoreState(header)
        # An INI file gives "true"/"false" back as text: ask for a bool.
        self.form.set_advanced_expanded(bool(s.value("window/form_advanced", False, type=bool)))

    def remembered_catalog_task(self) -> str | None:
        value = self.settings.value("window/catalog_task")
        return value if isinstance(value, str) else None

    # ------------------------------------------------------------ internals

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 (Qt's name)
        if self._really_closing:
            self.save_state()
            event.accept()
            return
        event.ignore()  # the app decides (it may ask about running tasks)
        self.quit_requested.emit()

    def close_for_quit(self) -> None:
        """Close for good (after the app decided to quit)."""
        self._really_closing = True
        if self.tray is not None:
            self.tray.hide()
        self.close()

    def _show_detail(self, task_id: str) -> None:
        task = self.model.task_by_id(task_id)
        if task is None:
            self.detail.clear()
            return
        spec = self._catalog.get(task.get("task", ""))
        self.detail.show_task(task, self.title_of(task.get("task", "")),
                              self.model.events(task_id), self.model.output(task_id),
                              self.model.output_dropped(task_id),
                              spec.get("display") if spec else None)  # fmt: skip

    def _update_actions(self) -> None:
        ids = self.selected_ids()
        tasks = [t for t in (self.model.task_by_id(i) for i in ids) if t]
        self.cancel_action.setEnabled(any(t["state"] in ("queued", "running") for t in tasks))
        self.delete_action.setEnabled(bool(tasks))
        self.rerun_action.setEnabled(len(tasks) == 1)
        self.edit_rerun_action.setEnabled(len(tasks) == 1)
        # Shown only where it applies (a hidden action is disabled too: visible first).
        overwritable = len(tasks) == 1 and can_overwrite(tasks[0])
        self.overwrite_rerun_action.setVisible(overwritable)
        self.overwrite_rerun_action.setEnabled(overwritable)
        self.copy_action.setEnabled(len(tasks) == 1 and tasks[0]["state"] in
                                    ("succeeded", "failed"))  # fmt: skip

    def _on_catalog_list_current_item_changed(self, item: QListWidgetItem | None) -> None:
        name = item.data(Qt.ItemDataRole.UserRole) if item else None
        self.form.set_spec(self._catalog.get(name) if name else None)

    def _on_state_filter_changed(self, index: int) -> None:
        self.proxy.set_states(STATE_FILTERS[index][1])
        self._search_timer.stop()
        self.model.set_search(self.search.text(), STATE_FILTERS[index][1])

    def _on_search_text_changed(self, text: str) -> None:
        self.proxy.set_text(text)  # what is loaded, at once; the server's answer follows
        self._search_timer.start()

    def _on_search_timer_timeout(self) -> None:
        states = STATE_FILTERS[self.state_filter.currentIndex()][1]
        self.model.set_search(self.search.text(), states)

    def _on_delete_triggered(self) -> None:
        """Delete: running or queued rows are cancelled, finished ones removed (undo)."""
        ids = self.selected_ids()
        tasks = [t for t in (self.model.task_by_id(i) for i in ids) if t]
        active = [t["id"] for t in tasks if t["state"] in ("queued", "running")]
        finished = [t["id"] for t in tasks if t["state"] not in ("queued", "running")]
        if active:
            self.cancel_requested.emit(active)
        if finished:
            self.remove_requested.emit(finished)

    def _on_clear_triggered(self) -> None:
        """Clear finished: ask first (with the count), unless told not to ask again."""
        count = len(self.model.finished_ids())
        if not count:
            self.show_status("No finished tasks to clear.")
            return
        if not self.settings.value(ASK_BEFORE_CLEAR, True, type=bool):
            self.clear_finished_requested.emit()
            return
        if self.clear_box is not None:
            return  # already asking
        box = QMessageBox(self)
        box.setIcon(QMessageBox.Icon.Question)
        box.setWindowTitle("Clear finished tasks?")
        box.setText(f"Delete the {count} finished task{'s' if count != 1 else ''} in the list?")
        box.setInformativeText("They are deleted from Herald's history for good. Running and "
                               "queued tasks stay.")  # fmt: skip
        dont_ask = QCheckBox("Don't ask again", box)  # parented: PySide6 does not keep it
        box.setCheckBox(dont_ask)
        clear = box.addButton("Clear", QMessageBox.ButtonRole.DestructiveRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)

        def answered(_result: int) -> None:
            self.clear_box = None
            confirmed = box.clickedButton() is clear
            if confirmed and dont_ask.isChecked():
                self.settings.setValue(ASK_BEFORE_CLEAR, False)
            box.deleteLater()
            if confirmed:
                self.clear_finished_requested.emit()

        box.finished.connect(answered)
        self.clear_box = box
        box.open()  # not exec(): the event loop (and the live view) keeps running

    def _on_table_selection_changed(self, *_: object) -> None:
        ids = self.selected_ids()
        if len(ids) == 1:
            self._show_detail(ids[0])
        elif not ids:
            self.detail.clear()
        self._update_actions()

    def _on_table_context_menu_requested(self, pos: Any) -> None:
        index: QModelIndex = self.table.indexAt(pos)
        if index.isValid() and not self.table.selectionModel().isRowSelected(index.row()):
            self.table.selectRow(index.row())
        menu = QMenu(self)
        for a in (self.cancel_action, self.delete_action, self.rerun_action,
                  self.edit_rerun_action, self.overwrite_rerun_action, self.copy_action):
            menu.addAction(a)
        menu.addSeparator()
        menu.addAction(self.clear_action)
        menu.popup(self.table.viewport().mapToGlobal(pos))

    def _on_cancel_triggered(self) -> None:
        ids = [i for i in self.selected_ids()
               if (t := self.model.task_by_id(i)) and t["state"] in ("queued", "running")]
        if ids:
            self.cancel_requested.emit(ids)

    def _on_rerun_triggered(self) -> None:
        self._for_selected(self._rerun)

    def _for_selected(self, action: Any) -> None:
        ids = self.selected_ids()
        if len(ids) == 1:
            action(ids[0])

    def _fill_form_with(self, task: dict[str, Any]) -> None:
        """The task's form, filled in with its arguments and time limit."""
        self.select_catalog_task(task["task"])
        self.form.set_values(task.get("args", {}))
        self.form.set_time_limit(task.get("timeout"))

    def _rerun(self, task_id: str) -> None:
        task = self.model.task_by_id(task_id)
        if task is None:
            return
        # The form shows what runs again, ready for a tweaked run after this one.
        self._fill_form_with(task)
        self.rerun_requested.emit(task_id)

    def _edit_rerun(self, task_id: str) -> None:
        """Open the task's form with its arguments, for the user to change and run."""
        task = self.model.task_by_id(task_id)
        if task is None:
            return
        if self.main_splitter.sizes()[0] == 0:  # the form's column was collapsed
            self.main_splitter.setSizes([LEFT_WIDTH, max(1, self.width() - LEFT_WIDTH)])
        self._fill_form_with(task)
        self.form.check_paths_now()  # what made it fail, said at once (an existing file…)
        self.form.setFocus(Qt.FocusReason.OtherFocusReason)
        self.form.focusNextChild()
        self.show_status(f"Edit the arguments of {self.title_of(task['task'])} and press Run.")

    def _overwrite_rerun(self, task_id: str) -> None:
        """Run a task that found its destination again, replacing it this time."""
        task = self.model.task_by_id(task_id)
        if task is None or not can_overwrite(task):
            return
        self._fill_form_with(task)
        args = dict(task.get("args") or {})
        args["overwrite"] = True
        self.form.set_values(args)
        timeout = task.get("timeout")
        self.run_requested.emit(task["task"], args,
                                timeout if isinstance(timeout, int | float) else None)

    def _has_path_param(self, name: str) -> bool:
        spec = self._catalog.get(name) or {}
        return any(p.get("type") == "path" for p in spec.get("params", []))

    def _on_catalog_list_path_dropped(self, name: str, path: str) -> None:
        self.select_catalog_task(name)
        if self.form.fill_first_path(path):
            self.show_status(f"{self.title_of(name)}: {path}")

    def _update_empty_state(self, *_: object) -> None:
        self.empty_state.set_hint(hint_text(shown=self.proxy.rowCount(),
                                            total=self.model.rowCount(),
                                            loading=self._loading))  # fmt: skip

    def _on_log_dock_visibility_changed(self, visible: bool) -> None:
        # Opened, the dock takes a strip at the bottom, not the height the form needs.
        if visible and not self.log_dock.isFloating():
            height = max(80, min(self.log_dock.height(), int(self.height() * LOG_DOCK_SHARE)))
            self.resizeDocks([self.log_dock], [height], Qt.Orientation.Vertical)

    def resizeEvent(self, event: Any) -> None:  # noqa: N802 (Qt's name)
        super().resizeEvent(event)
        # In a small window the table comes first: the form's column gives way.
        sizes = self.main_splitter.sizes()
        total = sum(sizes)
        if total > 0 and sizes[0] > total * LEFT_SHARE:
            left = int(total * LEFT_SHARE)
            self.main_splitter.setSizes([left, total - left])
        # ... and in a short one the detail below the table gives way to it (it scrolls);
        # in a tall one it gets the height it needs (no scroll bar).
        sizes = self.right_splitter.sizes()
        total = sum(sizes)
        short = self.height() < SHORT_HEIGHT
        self._detail_box.setMinimumHeight(DETAIL_MIN if short else min(
            self.detail.minimumSizeHint().height(), int(self.height() * DETAIL_SHARE)))
        bar = Qt.ScrollBarPolicy  # tall: the tabs' own scroll bars are enough
        self._detail_box.setVerticalScrollBarPolicy(
            bar.ScrollBarAsNeeded if short else bar.ScrollBarAlwaysOff)
        if short and total > 0 and sizes[0] < total * TABLE_SHARE:
            table = int(total * TABLE_SHARE)
            self.right_splitter.setSizes([table, total - table])

    def _on_copy_triggered(self) -> None:
        ids = self.selected_ids()
        task = self.model.task_by_id(ids[0]) if len(ids) == 1 else None
        if task is None:
            return
        if task["state"] == "failed":
            text = json.dumps(task.get("error"), indent=2)
        else:
            result = task.get("result")
            text = result if isinstance(result, str) else json.dumps(result, indent=2)
        QGuiApplication.clipboard().setText(text)
        self.show_status("Result copied to the clipboard.")

    def _on_tray_activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason == QSystemTrayIcon.ActivationReason.Trigger:
            self.bring_to_front()

    def _on_tray_message_clicked(self) -> None:
        self.bring_to_front()
        if self._notified_task:
            self.select_task(self._notified_task)

    def _on_notifier_clicked(self, task_id: str) -> None:
        self.bring_to_front()
        self.select_task(task_id)


def _titled(title: str, widget: QWidget) -> QWidget:
    box = QWidget()
    layout = QVBoxLayout(box)
    layout.setContentsMargins(0, 0, 0, 0)
    label = QLabel(f"<b>{title}</b>")
    label.setBuddy(widget)
    layout.addWidget(label)
    layout.addWidget(widget)
    return box
