// Benchmark clients: N real socket.io-client sockets (websocket transport) in one room.
// Usage: node bench_sio.mjs <base-url> <token> <n> <room> <event>
// stdout: `ready` once every socket joined. Each received <event> is recorded as the bench
// key (payload.data.subject = "b<key>") and the receive time in epoch milliseconds
// (performance.timeOrigin + performance.now(), the clock Rust's SystemTime reads). When
// stdin closes: one line `<key> <ms>` per received event, then `end`. Nothing is printed
// during the run, so measuring costs the clients no extra work.
import { io } from "socket.io-client";

const [base, token, nArg, room, eventName] = process.argv.slice(2);
const n = Number(nArg);
const origin = performance.timeOrigin;
// Received (key, time) pairs in fixed-size typed chunks: no large array is ever copied or
// scanned by the garbage collector during the run (that showed up as 100+ ms pauses).
const CHUNK = 65536;
const chunks = [];
let used = CHUNK;
function record(key, t) {
  if (used === CHUNK) {
    chunks.push({ keys: new Float64Array(CHUNK), times: new Float64Array(CHUNK), n: 0 });
    used = 0;
  }
  const c = chunks[chunks.length - 1];
  c.keys[used] = key;
  c.times[used] = t;
  used += 1;
  c.n = used;
}
const sockets = [];
let joined = 0;

function fail(msg) {
  process.stderr.write(`bench_sio: ${msg}\n`);
  process.exit(1);
}

function open(i) {
  const s = io(base, { auth: { token }, transports: ["websocket"], reconnection: false, forceNew: true });
  sockets.push(s);
  s.on("connect_error", (err) => fail(`socket ${i}: ${err.message}`));
  s.on("disconnect", (reason) => {
    if (!finishing) process.stderr.write(`bench_sio: socket ${i} disconnected: ${reason}\n`);
  });
  s.on(eventName, (p) => {
    const t = origin + performance.now();
    const subject = p && p.data && p.data.subject;
    if (typeof subject === "string" && subject[0] === "b") {
      record(Number(subject.slice(1)), t);
    }
  });
  return new Promise((resolve) => {
    s.on("connect", () => {
      s.emit("join", room, (ack) => {
        if (!ack || !ack.ok) fail(`socket ${i}: join refused ${JSON.stringify(ack)}`);
        joined += 1;
        resolve();
      });
    });
  });
}

let finishing = false;
function finish() {
  finishing = true;
  for (const s of sockets) s.close();
  for (const c of chunks) {
    let text = "";
    for (let j = 0; j < c.n; j++) text += `${c.keys[j]} ${c.times[j].toFixed(3)}\n`;
    process.stdout.write(text);
  }
  process.stdout.write("end\n", () => process.exit(0));
}

// Open in waves of 50 so the server is not flooded with handshakes.
for (let i = 0; i < n; i += 50) {
  const wave = [];
  for (let j = i; j < Math.min(i + 50, n); j++) wave.push(open(j));
  await Promise.all(wave);
}
if (joined !== n) fail(`only ${joined} of ${n} joined`);
process.stdout.write("ready\n");
process.stdin.on("end", finish);
process.stdin.resume();
