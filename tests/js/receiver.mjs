// A webhook receiver for rowcast's integration tests. Verifies every request with the
// published `standardwebhooks` library (not rowcast's code) and prints one JSON line per
// request on stdout.
//
//   node receiver.mjs [--port N] [--fail-first N] [--hold-first N] [--status CODE]
//
// stdin takes JSON lines: {"secret": "whsec_..."} adds a secret to verify with (answered
// with {"ack": "secret"}). The first stdout line is {"listening": <port>}.
//   --fail-first N  answer 500 to the first N requests
//   --hold-first N  never answer the first N requests (keep them open)
//   --status CODE   answer CODE (default 200) to the others
//   --secret S      verify with S from the start (repeatable)
import http from "node:http";
import readline from "node:readline";
import { Webhook } from "standardwebhooks";

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const port = opt("--port", 0);
const failFirst = opt("--fail-first", 0);
const holdFirst = opt("--hold-first", 0);
const status = opt("--status", 200);
const secrets = args.flatMap((a, i) => (a === "--secret" ? [args[i + 1]] : []));
let count = 0;
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  if (!line.trim()) return;
  const cmd = JSON.parse(line);
  if (cmd.secret) {
    secrets.push(cmd.secret);
    out({ ack: "secret" });
  }
});

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    count += 1;
    const n = count;
    const body = Buffer.concat(chunks).toString("utf8");
    const headers = {
      "webhook-id": req.headers["webhook-id"],
      "webhook-timestamp": req.headers["webhook-timestamp"],
      "webhook-signature": req.headers["webhook-signature"],
    };
    let verified = false;
    let error = secrets.length ? null : "no secret registered";
    for (const s of secrets) {
      try {
        new Webhook(s).verify(body, headers);
        verified = true;
        error = null;
        break;
      } catch (e) {
        error = String(e && e.message ? e.message : e);
      }
    }
    let parsed = null;
    try {
      parsed = JSON.parse(body);
    } catch {}
    const held = n <= holdFirst;
    const code = n <= failFirst ? 500 : status;
    out({
      n, path: req.url, method: req.method, id: headers["webhook-id"],
      timestamp: headers["webhook-timestamp"], signature: headers["webhook-signature"],
      content_type: req.headers["content-type"], verified, error, body: parsed,
      answered: held ? null : code,
    });
    if (held) return; // keep the request open
    res.writeHead(code, { "content-type": "text/plain" });
    res.end(code >= 200 && code < 300 ? "ok" : `failing on purpose (request ${n})`);
  });
});
server.keepAliveTimeout = 30000;
server.listen(port, "127.0.0.1", () => out({ listening: server.address().port }));
