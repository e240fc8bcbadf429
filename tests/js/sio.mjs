// Drives real socket.io-client sockets for rowcast's integration tests.
// Usage: node sio.mjs <base-url>
// stdin, one JSON command per line:
//   {"cmd":"connect","id":"a","auth":{...},"transports":["websocket"]}
//   {"cmd":"emit","id":"a","event":"join","args":["tickets"],"req":1}   (answered with the ack)
//   {"cmd":"close","id":"a"}
// stdout, one JSON line per thing that happened to socket `id`:
//   {"id","type":"connect"} | {"id","type":"connect_error","message"} |
//   {"id","type":"disconnect","reason"} | {"id","type":"ack","req","ack"} |
//   {"id","type":"event","event","payload","args","last"}   (the first and last of `args` arguments)
import { io } from "socket.io-client";
import readline from "node:readline";

const base = process.argv[2];
const sockets = new Map();
const out = (v) => process.stdout.write(JSON.stringify(v) + "\n");

function connect({ id, auth, transports }) {
  const socket = io(base, {
    auth,
    transports: transports ?? ["websocket"],
    reconnection: false,
    forceNew: true,
  });
  socket.on("connect", () => out({ id, type: "connect" }));
  socket.on("connect_error", (err) => out({ id, type: "connect_error", message: err.message }));
  socket.on("disconnect", (reason) => out({ id, type: "disconnect", reason }));
  socket.onAny((event, ...args) =>
    out({ id, type: "event", event, payload: args[0], args: args.length, last: args[args.length - 1] }));
  sockets.set(id, socket);
}

const rl = readline.createInterface({ input: process.stdin });
rl.on("line", (line) => {
  const c = JSON.parse(line);
  switch (c.cmd) {
    case "connect":
      connect(c);
      break;
    case "emit":
      sockets.get(c.id).emit(c.event, ...c.args, (ack) => out({ id: c.id, type: "ack", req: c.req, ack }));
      break;
    case "close":
      sockets.get(c.id)?.close();
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
