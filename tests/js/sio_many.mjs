// Connects N socket.io-client sockets (websocket transport), joins each to a room, and
// reports when every one received one event of the given name.
// Usage: node sio_many.mjs <base-url> <token> <n> <room> <event>
// stdout: {"type":"ready","n"} once all joined, then {"type":"done","received","elapsed_ms"}.
import { io } from "socket.io-client";

const [base, token, nArg, room, eventName] = process.argv.slice(2);
const n = Number(nArg);
const out = (v) => process.stdout.write(JSON.stringify(v) + "\n");
let joined = 0;
let received = 0;
let readyAt = 0;
const sockets = [];

function finish() {
  out({ type: "done", received, elapsed_ms: Date.now() - readyAt });
  for (const s of sockets) s.close();
  process.exit(0);
}

for (let i = 0; i < n; i++) {
  const s = io(base, { auth: { token }, transports: ["websocket"], reconnection: false, forceNew: true });
  sockets.push(s);
  let got = false;
  s.on("connect_error", (err) => out({ type: "error", index: i, message: err.message }));
  s.on("connect", () => {
    s.emit("join", room, (ack) => {
      if (!ack || !ack.ok) {
        out({ type: "error", index: i, ack });
        return;
      }
      joined += 1;
      if (joined === n) {
        readyAt = Date.now();
        out({ type: "ready", n });
      }
    });
  });
  s.on(eventName, () => {
    if (got) return;
    got = true;
    received += 1;
    if (received === n) finish();
  });
}
// The Rust test bounds the wait; closing stdin ends this process with what it has.
process.stdin.on("end", finish);
process.stdin.resume();
