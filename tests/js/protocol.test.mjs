// The protocol test vectors (tests/vectors/protocol) against the browser's client,
// services/web/static/herald-live.js: `node --test tests/js/` (pytest runs it too, in
// tests/services/core/test_protocol_vectors.py).
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import {
  ClientSession, LiveChannel, ProtocolError,
} from "../../services/web/static/herald-live.js";

const here = dirname(fileURLToPath(import.meta.url));
const folder = join(here, "..", "vectors", "protocol");
const vectors = readdirSync(folder).filter((f) => f.endsWith(".json")).sort()
  .map((f) => JSON.parse(readFileSync(join(folder, f), "utf8")));

function subset(expected, body) {
  return Object.entries(expected).every(([k, v]) => k in body
    && JSON.stringify(body[k]) === JSON.stringify(v));
}

// Python writes compact JSON with the keys in the order given: so does JSON.stringify.
const frame = (step) => ("receive_raw" in step ? step.receive_raw : JSON.stringify(step.receive));

for (const vector of vectors) {
  test(`the JavaScript client follows ${vector.name}`, () => {
    const spec = vector.client;
    const { rand, ...delays } = spec.delays;
    const session = new ClientSession({ since: spec.since, delays: { ...delays, rand: () => rand } });
    spec.steps.forEach((step, number) => {
      const where = `step ${number}: ${JSON.stringify(step)}`;
      let delay = "unset";
      if ("connect" in step) {
        session.connectionMade();
        if ("since" in step) assert.equal(session.since, step.since, where);
      } else if ("receive" in step || "receive_raw" in step) {
        if ("error" in step) {
          assert.throws(() => session.receiveText(frame(step)),
            (e) => e instanceof ProtocolError && e.code === step.error, where);
        } else {
          const msg = session.receiveText(frame(step));
          const got = msg === null ? [] : [msg.body];
          assert.equal(got.length, step.deliver.length, where);
          step.deliver.forEach((want, i) => assert.ok(subset(want, got[i]),
            `${where}: got ${JSON.stringify(got[i])}`));
        }
      } else if ("subscribe" in step) {
        session.subscribe(step.subscribe);
      } else if ("ping" in step) {
        session.ping();
      } else if ("resume" in step) {
        session.resume();
      } else if ("disconnect" in step) {
        delay = session.connectionLost(step.disconnect);
      } else if ("attempt_failed" in step) {
        delay = session.attemptFailed();
      } else {
        assert.fail(`unknown step ${where}`);
      }
      const sent = session.dataToSend().map((t) => JSON.parse(t));
      assert.deepEqual(sent, step.send ?? [], where);
      if ("cursor" in step) assert.equal(session.lastSeq, step.cursor, where);
      if ("reconnect_in" in step) {
        if (step.reconnect_in === null) assert.equal(delay, null, where);
        else assert.ok(Math.abs(delay - step.reconnect_in) < 1e-9, `${where}: got ${delay}`);
      }
      if ("tasks" in step) assert.deepEqual(session.tasks, step.tasks, where);
      if ("resets" in step) assert.equal(session.resets, step.resets, where);
    });
  });
}

// LiveChannel on a scripted WebSocket and clock: what a page does with a real one.
class FakeSocket {
  static made = [];
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    FakeSocket.made.push(this);
  }
  send(text) { this.sent.push(JSON.parse(text)); }
  close(code, reason) { this.readyState = 3; this.closedWith = [code, reason]; }
  // the server's side
  accept() { this.readyState = 1; this.onopen(); }
  deliver(obj) { this.onmessage({ data: JSON.stringify(obj) }); }
  drop(code, reason = "") { this.readyState = 3; this.onclose({ code, reason }); }
}

test("LiveChannel resumes from its cursor after a drop, after the backoff, once each event", () => {
  FakeSocket.made = [];
  const timers = [];
  const clock = { setTimeout: (fn, ms) => timers.push([fn, ms]), clearTimeout: () => {} };
  const messages = [];
  const states = [];
  const channel = new LiveChannel("ws://127.0.0.1:9/ws", {
    since: 1, delays: { first: 0.1, cap: 5, jitter: 0 }, WebSocket: FakeSocket, timers: clock,
    onMessage: (m) => messages.push(m.event ? m.event.seq : m.type),
    onState: (s, r) => states.push(r === null ? s : `${s} ${r}`),
  });
  channel.open();
  const first = FakeSocket.made[0];
  assert.equal(first.url, "ws://127.0.0.1:9/ws?since=1");
  first.accept();
  const ev = (seq) => ({ v: 1, type: "event", seq, task: "a", event: "progress", ts: 1, data: {} });
  first.deliver({ v: 1, type: "welcome", principal: "p", head: 3, reset: false });
  channel.subscribe(["a"]);
  assert.deepEqual(first.sent, [{ v: 1, type: "subscribe", tasks: ["a"], since: 1 }]);
  first.deliver({ v: 1, type: "welcome", principal: "p", head: 3, reset: false });
  first.deliver(ev(2));
  first.deliver(ev(3));
  first.deliver({ v: 1, type: "caught_up", seq: 3 });
  first.drop(1001, "notifier stopping");
  assert.deepEqual(timers.map(([, ms]) => ms), [100]);
  timers.shift()[0]();
  const second = FakeSocket.made[1];
  assert.equal(second.url, "ws://127.0.0.1:9/ws?since=3");
  second.accept();
  second.deliver({ v: 1, type: "welcome", principal: "p", head: 4, reset: false });
  assert.deepEqual(second.sent, [{ v: 1, type: "subscribe", tasks: ["a"], since: 1 }]);
  second.deliver(ev(3));
  second.deliver(ev(4));
  second.deliver({ v: 1, type: "caught_up", seq: 4 });
  second.deliver({ v: 1, type: "welcome", principal: "p", head: 4, reset: false });
  second.deliver({ v: 1, type: "caught_up", seq: 4 });
  second.deliver("not json");
  second.onmessage({ data: "not json" });
  // the caught_up of the subscribe's answer is the session's own; the reconnection's is not
  assert.deepEqual(messages, ["welcome", 2, 3, "welcome", 4, "caught_up"]);
  assert.deepEqual(states, ["connecting", "connected", "reconnecting 0.1", "connecting",
    "connected"]);
  second.drop(4401, "unauthorized: this token was revoked");
  assert.equal(timers.length, 0);
  assert.equal(channel.state, "closed");
  assert.equal(channel.closeCode, 4401);
});

test("LiveChannel closes a connection whose first frame is no welcome, then retries", () => {
  FakeSocket.made = [];
  const timers = [];
  const clock = { setTimeout: (fn, ms) => timers.push([fn, ms]), clearTimeout: () => {} };
  const channel = new LiveChannel("ws://127.0.0.1:9/ws", {
    delays: { first: 0.5, cap: 5, jitter: 0 }, WebSocket: FakeSocket, timers: clock,
  });
  channel.open();
  const ws = FakeSocket.made[0];
  assert.equal(ws.url, "ws://127.0.0.1:9/ws");
  ws.accept();
  ws.onmessage({ data: "{" });
  assert.equal(ws.closedWith[0], 1000);
  assert.match(ws.closedWith[1], /protocol error 1007/);
  ws.drop(1000);
  assert.deepEqual(timers.map(([, ms]) => ms), [500]);
  channel.close();
  timers.shift()[0]();
  assert.equal(FakeSocket.made.length, 1);
});
