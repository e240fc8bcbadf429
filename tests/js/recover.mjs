// Drives real socket.io-client sockets the way the helpdesk frontend uses them: default
// options (automatic reconnection, polling then upgrade unless `transports` is given), the
// rooms joined in the `connect` handler on every (re)connect.
// Usage: node recover.mjs <base-url>
// stdin, one JSON command per line:
//   {"cmd":"connect","id":"a","auth":{...},"rooms":["tickets",...],"transports":["websocket"]}
//   {"cmd":"drop","id":"a"}                    the network drops (engine closed; the client reconnects)
//   {"cmd":"set","id":"a","pid":"...","offset":"..."}   overwrite what the client sends back
//   {"cmd":"info","id":"a"}                    answers {"type":"info","pid","offset"}
//   {"cmd":"pause","id":"a"} / {"cmd":"resume","id":"a"}   socket.disconnect() / socket.connect()
//   {"cmd":"count","id":"a","n":N}             quiet mode: no event lines; one {"type":"counted",
//                                              "n","ms","ordered"} once N events arrived after it
//   {"cmd":"close","id":"a"}
// stdout, one JSON line per thing that happened to socket `id`:
//   {"id","type":"connect","recovered","pid"} | {"id","type":"connect_error","message"} |
//   {"id","type":"disconnect","reason"} | {"id","type":"joined","acks":[...]} |
//   {"id","type":"event","event","payload","args","last"}
import { io } from "socket.io-client";
import readline from "node:readline";

const base = process.argv[2];
const sockets = new Map();
const counting = new Map();
const out = (v) => process.stdout.write(JSON.stringify(v) + "\n");

function connect({ id, auth, rooms = [], transports }) {
  // Default options: only `forceNew`, so that several sockets of one test do not share a
  // connection.
  const options = { auth, forceNew: true };
  if (transports) options.transports = transports;
  const socket = io(base, options);
  socket.on("connect", async () => {
    out({ id, type: "connect", recovered: socket.recovered, pid: socket._pid ?? null });
    // Like the frontend: join every room on every connect.
    const acks = await Promise.all(rooms.map((r) => socket.emitWithAck("join", r)));
    out({ id, type: "joined", acks });
  });
  socket.on("connect_error", (err) => out({ id, type: "connect_error", message: err.message }));
  socket.on("disconnect", (reason) => out({ id, type: "disconnect", reason }));
  socket.onAny((event, ...args) => {
    const c = counting.get(id);
    if (c) {
      c.got += 1;
      const seq = Number(args[args.length - 1]);
      if (!(seq > c.last)) c.ordered = false;
      c.last = seq;
      if (c.got === c.n) {
        out({ id, type: "counted", n: c.got, ms: performance.now() - c.t0, ordered: c.ordered });
        counting.delete(id);
      }
      return;
    }
    out({ id, type: "event", event, payload: args[0], args: args.length, last: args[args.length - 1] });
  });
  sockets.set(id, socket);
}

const rl = readline.createInterface({ input: process.stdin });
rl.on("line", (line) => {
  const c = JSON.parse(line);
  const socket = sockets.get(c.id);
  switch (c.cmd) {
    case "connect":
      connect(c);
      break;
    case "drop":
      socket.io.engine.close();
      break;
    case "set":
      if (c.pid !== undefined) socket._pid = c.pid;
      if (c.offset !== undefined) socket._lastOffset = c.offset;
      break;
    case "pause":
      socket.disconnect();
      break;
    case "resume":
      socket.connect();
      break;
    case "count":
      counting.set(c.id, { n: c.n, got: 0, last: 0, ordered: true, t0: performance.now() });
      break;
    case "info":
      out({ id: c.id, type: "info", pid: socket._pid ?? null, offset: socket._lastOffset ?? null });
      break;
    case "close":
      socket?.close();
      sockets.delete(c.id);
      break;
    default:
      out({ type: "error", message: `unknown command ${c.cmd}` });
  }
});
rl.on("close", () => {
  for (const s of sockets.values()) s.close();
  process.exit(0);
});
