// Reads rowcast's SSE stream with the real `eventsource` client.
// Usage: node sse.mjs <url> [last-event-id]
// stdout: {"type":"open"} | {"type":"event","event","id","data"} | {"type":"error","message","code"}
import { EventSource } from "eventsource";

const [url, lastEventId] = process.argv.slice(2);
const out = (v) => process.stdout.write(JSON.stringify(v) + "\n");
const names = ["ready", "resync_required", "rowcast:error", "ticket.update", "comment.update", "user.update", "kb.update", "attachment.update", "notification", "notification.update"];

// A browser sends Last-Event-ID itself when it reconnects; a fresh EventSource that resumes
// from a stored position passes it the same way.
const es = new EventSource(url, {
  fetch: (input, init) =>
    fetch(input, {
      ...init,
      headers: { ...init.headers, ...(lastEventId ? { "Last-Event-ID": lastEventId } : {}) },
    }),
});
es.onopen = () => out({ type: "open" });
es.onerror = (e) => out({ type: "error", message: e.message ?? null, code: e.code ?? null });
for (const name of names) {
  es.addEventListener(name, (e) =>
    out({ type: "event", event: name, id: e.lastEventId, data: JSON.parse(e.data) }));
}
process.stdin.on("end", () => { es.close(); process.exit(0); });
process.stdin.resume();
