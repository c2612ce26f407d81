from tests.desktop.test_app import running, runtime, WAIT  # noqa: F401

def test_repro(running):
    tid = running.run_task("process.run", program="seq", args=["1", "100000"])
    running.wait_state(tid, "succeeded")
    running.window.select_task(tid)
    m = running.app.model
    running.qtbot.wait(3000)
    out = m.output(tid)
    print("model lines", len(out), "dropped", m.output_dropped(tid), out[-1] if out else None)
    print("result", m.task_by_id(tid)["result"])
    doc = running.window.detail.output
    print("doc blocks", doc.blockCount(), repr(doc.document().lastBlock().text()))
    print("first block", repr(doc.document().firstBlock().text()))
    sb = doc.verticalScrollBar(); print("scroll", sb.value(), sb.maximum())
    tl = running.app.app_client_timeline if hasattr(running.app, "x") else None
