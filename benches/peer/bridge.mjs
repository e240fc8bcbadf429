// The peer rowcast is measured against: a realtime bridge built by hand the usual way.
// A per-row trigger calls pg_notify('peer_changes', {table, op, id}) (installed by the
// bench, see benches/rowcast/versus.rs); this process LISTENs on one node-postgres client,
// loads each notified row with one `SELECT row_to_json(t)` from a pool, and emits it to the
// table's room with socket.io 4.8: `io.to(room).emit("<entity>.update", payload)`.
// Clients join a room with `socket.emit("join", room, ack)`, as rowcast's do. No
// authentication, no per-row audiences, no ordering guarantee across pool connections, no
// resume: what a hand-made bridge typically leaves out.
//
// Usage: node bridge.mjs <port> <database-url> <minimal|rowcast>
//   minimal: payload { op, table, data } — what a hand-made bridge sends;
//   rowcast: rowcast's exact event object and trailing seq argument, so a comparison is of
//            the servers and not of payload sizes.
// stdout: `ready` once listening.
import { createServer } from "node:http";
import pg from "pg";
import { Server } from "socket.io";

const [portArg, databaseUrl, payload = "minimal"] = process.argv.slice(2);
if (!portArg || !databaseUrl || !["minimal", "rowcast"].includes(payload)) {
  process.stderr.write("usage: node bridge.mjs <port> <database-url> <minimal|rowcast>\n");
  process.exit(2);
}

const ENTITIES = { tickets: "ticket", comments: "comment", users: "user", kb_articles: "kb", attachments: "attachment" };
const ROOMS = { tickets: "tickets", comments: "comments", users: "users", kb_articles: "kb", attachments: "attachments" };
const OPS = { INSERT: "insert", UPDATE: "update", DELETE: "delete" };

const listener = new pg.Client({ connectionString: databaseUrl });
const pool = new pg.Pool({ connectionString: databaseUrl, max: 4 });
await listener.connect();

const http = createServer();
const io = new Server(http, { serveClient: false });
io.on("connection", (socket) => {
  socket.on("join", (room, ack) => {
    socket.join(String(room));
    if (typeof ack === "function") ack({ ok: true, room });
  });
});

let seq = 0;
listener.on("notification", async (msg) => {
  let n;
  try {
    n = JSON.parse(msg.payload);
  } catch {
    return;
  }
  const entity = ENTITIES[n.table];
  const room = ROOMS[n.table];
  if (!entity) return;
  const op = OPS[n.op];
  let row = { id: n.id };
  if (op !== "delete") {
    // The table name comes from the trigger (TG_TABLE_NAME), never from a client.
    const r = await pool.query(`SELECT row_to_json(t) AS row FROM ${n.table} t WHERE id = $1`, [n.id]);
    if (r.rows.length === 0) return;
    row = r.rows[0].row;
  }
  if (payload === "minimal") {
    io.to(room).emit(`${entity}.update`, { op, table: n.table, data: row });
  } else {
    seq += 1;
    const past = op === "insert" ? "created" : op === "update" ? "updated" : "deleted";
    const s = String(seq);
    io.to(room).emit(
      `${entity}.update`,
      {
        event: `${entity}.${past}`,
        op,
        entity,
        table: `public.${n.table}`,
        id: n.id,
        seq: s,
        data: row,
        old: op === "insert" ? null : { id: n.id },
        committed_at: new Date().toISOString(),
      },
      s,
    );
  }
});
await listener.query("LISTEN peer_changes");

http.listen(Number(portArg), "127.0.0.1", () => process.stdout.write("ready\n"));
process.on("SIGTERM", () => process.exit(0));
