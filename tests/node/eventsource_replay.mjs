// Reads a task's events with the npm `eventsource` client (the WHATWG EventSource), as a
// browser would, and prints what it received as JSON lines until the task's finish message:
//   {"kind":"message","lastEventId":..,"data":..}  {"kind":"close"}  {"kind":"error","message":..}
// Usage: node eventsource_replay.mjs <events url> [Last-Event-ID]
import { EventSource } from "eventsource";

const [url, lastEventId] = process.argv.slice(2);
const print = (value) => process.stdout.write(JSON.stringify(value) + "\n");
const headers = lastEventId ? { "Last-Event-ID": lastEventId } : {};
const source = new EventSource(url, {
  fetch: (input, init) => fetch(input, { ...init, headers: { ...init.headers, ...headers } }),
});
source.onmessage = (event) => {
  print({ kind: "message", lastEventId: event.lastEventId, data: event.data });
  if (JSON.parse(event.data).finish) {
    source.close();
    print({ kind: "close" });
  }
};
source.onerror = (event) => {
  source.close();
  print({ kind: "error", message: String(event.message || "error") });
};
