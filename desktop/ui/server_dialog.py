"""File → Connect to server…: a saved server's name, URL, token and CA file, tested first.

The dialog is opened with `open()` (window-modal, never a nested event loop: the app's
asyncio work goes on behind it). It does no I/O itself: "Test" and "Connect" emit what was
typed, the app checks the server (health, then the token) and answers with
`show_checking()`, `show_failed()` or `show_passed()`; "Connect" saves and connects only
after its check passed, so a wrong token saves nothing.

Signals:
    test_requested(dict): check these values, save nothing ({"name", "url", "token",
        "ca_file"}).
    connect_requested(dict): check them; if the check passes, save the server and connect.
    remove_requested(str): forget the saved server of this name.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

NEW_SERVER = "New server…"
_OK = "#2e9d4f"
_BAD = "#d0342c"


class ServerDialog(QDialog):
    test_requested = Signal(dict)
    connect_requested = Signal(dict)
    remove_requested = Signal(str)

    def __init__(self, saved: list[dict[str, str]], current: str = "",
                 parent: QWidget | None = None) -> None:  # fmt: skip
        """`saved`: the saved servers ({"name", "url", "ca_file"}; no tokens), `current`:
        the one the app is connected to (selected first)."""
        super().__init__(parent)
        self.setObjectName("server_dialog")
        self.setWindowTitle("Connect to a Herald server")
        self.setWindowModality(Qt.WindowModality.WindowModal)
        self._saved = {s["name"]: s for s in saved}
        self._busy = False

        intro = QLabel("Use the tasks of a Herald that runs elsewhere (<code>herald serve "
                       "--listen</code> on a server) instead of this computer's own. Its "
                       "token is kept in a file only you can read.")  # fmt: skip
        intro.setWordWrap(True)
        self.saved_box = QComboBox()
        self.saved_box.setAccessibleName("Saved servers")
        self.saved_box.addItem(NEW_SERVER, "")
        for name in self._saved:
            self.saved_box.addItem(name, name)
        self.saved_box.currentIndexChanged.connect(self._on_saved_box_current_index_changed)

        self.name_edit = QLineEdit()
        self.name_edit.setPlaceholderText("e.g. team server")
        self.url_edit = QLineEdit()
        self.url_edit.setPlaceholderText("https://herald.example.org:8443")
        self.token_edit = QLineEdit()
        self.token_edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.token_edit.setPlaceholderText("the token `herald token create NAME` printed")
        self.ca_edit = QLineEdit()
        self.ca_edit.setPlaceholderText("only for a self-signed certificate (PEM)")
        self.ca_button = QPushButton("Browse…")
        self.ca_button.clicked.connect(self._on_ca_button_clicked)
        ca_row = QHBoxLayout()
        ca_row.setContentsMargins(0, 0, 0, 0)
        ca_row.addWidget(self.ca_edit, 1)
        ca_row.addWidget(self.ca_button)
        ca = QWidget()
        ca.setLayout(ca_row)
        for edit in (self.name_edit, self.url_edit, self.token_edit, self.ca_edit):
            edit.textEdited.connect(self._on_edit_text_edited)

        form = QFormLayout()
        form.addRow("Saved servers", self.saved_box)
        form.addRow("&Name", self.name_edit)
        form.addRow("&URL", self.url_edit)
        form.addRow("&Token", self.token_edit)
        form.addRow("&CA certificate", ca)

        self.result_label = QLabel()
        self.result_label.setObjectName("server_check_result")
        self.result_label.setWordWrap(True)
        self.result_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.result_label.setMinimumHeight(40)

        self.buttons = QDialogButtonBox()
        self.test_button = self.buttons.addButton("&Test", QDialogButtonBox.ButtonRole.ActionRole)
        self.remove_button = self.buttons.addButton(
            "&Remove", QDialogButtonBox.ButtonRole.DestructiveRole
        )
        self.connect_button = self.buttons.addButton(
            "C&onnect", QDialogButtonBox.ButtonRole.AcceptRole
        )
        self.cancel_button = self.buttons.addButton(QDialogButtonBox.StandardButton.Cancel)
        self.test_button.setToolTip("Check that a Herald answers there and takes the token; "
                                    "nothing is saved")  # fmt: skip
        self.connect_button.setToolTip("Check, then save the server and use it")
        self.remove_button.setToolTip("Forget this saved server and its token")
        self.connect_button.setDefault(True)
        self.test_button.clicked.connect(lambda: self._request(self.test_requested))
        self.connect_button.clicked.connect(lambda: self._request(self.connect_requested))
        self.remove_button.clicked.connect(self._on_remove_button_clicked)
        self.cancel_button.clicked.connect(self.reject)

        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addLayout(form)
        layout.addWidget(self.result_label)
        layout.addWidget(self.buttons)
        self.resize(560, self.sizeHint().height())

        index = self.saved_box.findData(current) if current else -1
        self.saved_box.setCurrentIndex(max(index, 0))
        self._on_saved_box_current_index_changed(self.saved_box.currentIndex())

    # ------------------------------------------------------------------- values

    def values(self) -> dict[str, str]:
        """What is typed: name, url, token, ca_file (stripped)."""
        return {"name": self.name_edit.text().strip(), "url": self.url_edit.text().strip(),
                "token": self.token_edit.text().strip(),
                "ca_file": self.ca_edit.text().strip()}  # fmt: skip

    def fill(self, name: str, url: str, token: str = "", ca_file: str = "") -> None:
        self.name_edit.setText(name)
        self.url_edit.setText(url)
        self.token_edit.setText(token)
        self.ca_edit.setText(ca_file)

    # ------------------------------------------------------------ the app's answer

    def show_checking(self) -> None:
        self._set_busy(True)
        self._say("Checking…", "")

    def show_failed(self, message: str) -> None:
        """The check failed: say why (in red); the dialog stays open, nothing saved."""
        self._set_busy(False)
        self._say(message, _BAD)

    def show_passed(self, message: str) -> None:
        """The check passed (after Test: the dialog stays open)."""
        self._set_busy(False)
        self._say(message, _OK)

    def result_text(self) -> str:
        return self.result_label.text()

    # ---------------------------------------------------------------- internals

    def _request(self, signal: Any) -> None:
        values = self.values()
        if not values["name"]:
            self.show_failed("Give the server a name (it is shown in the title and menus, "
                             "and `herald --server NAME` picks it)")  # fmt: skip
            self.name_edit.setFocus()
            return
        if self._busy:
            return
        self.show_checking()
        signal.emit(values)

    def _set_busy(self, busy: bool) -> None:
        self._busy = busy
        for button in (self.test_button, self.connect_button, self.remove_button):
            button.setEnabled(not busy)
        if not busy:
            self._update_remove()

    def _say(self, text: str, colour: str) -> None:
        self.result_label.setText(text)
        self.result_label.setStyleSheet(f"color: {colour};" if colour else "")
        self.result_label.setAccessibleDescription(text)

    def _update_remove(self) -> None:
        self.remove_button.setEnabled(bool(self.saved_box.currentData()))

    def _on_saved_box_current_index_changed(self, _index: int) -> None:
        name = self.saved_box.currentData()
        server = self._saved.get(name) if name else None
        if server is not None:
            # The token stays where it is kept: left empty, the saved one is used.
            self.fill(server["name"], server["url"], "", server.get("ca_file", ""))
            self.token_edit.setPlaceholderText("saved (type a new one to replace it)")
        else:
            self.fill("", "", "", "")
            self.token_edit.setPlaceholderText("the token `herald token create NAME` printed")
        self._say("", "")
        self._update_remove()

    def _on_edit_text_edited(self, _text: str) -> None:
        self._say("", "")  # what was said was of other values

    def _on_remove_button_clicked(self) -> None:
        name = self.saved_box.currentData()
        if not name:
            return
        self.remove_requested.emit(name)
        self._saved.pop(name, None)
        self.saved_box.removeItem(self.saved_box.currentIndex())
        self.saved_box.setCurrentIndex(0)
        self._say(f"Removed {name}.", "")

    def _on_ca_button_clicked(self) -> None:
        # open(), not exec(): a nested loop would stall the app's asyncio work.
        picker = QFileDialog(self, "The server's CA certificate", self.ca_edit.text(),
                             "Certificates (*.pem *.crt *.cer);;All files (*)")  # fmt: skip
        picker.setFileMode(QFileDialog.FileMode.ExistingFile)
        picker.fileSelected.connect(self.ca_edit.setText)
        picker.finished.connect(picker.deleteLater)
        picker.open()
