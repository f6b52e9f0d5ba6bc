// Posts to a JoyAgent-compatible endpoint with @microsoft/fetch-event-source, as JoyAgent's UI
// does, and prints what it receives as JSON lines:
//   {"kind":"open","status":200,"headers":{...}}  {"kind":"message","id":..,"event":..,"data":..}
//   {"kind":"close"}  {"kind":"error","message":..}
// Usage: node compat_client.mjs <url> <json body> [origin]
import { fetchEventSource } from "@microsoft/fetch-event-source";

// fetch-event-source is written for browsers: it reaches for window.* and document.
globalThis.window = globalThis;
globalThis.document = {
  hidden: false,
  addEventListener() {},
  removeEventListener() {},
};

const [url, body, origin] = process.argv.slice(2);
const print = (value) => process.stdout.write(JSON.stringify(value) + "\n");
const headers = { "Content-Type": "application/json", Accept: "text/event-stream" };
if (origin) headers.Origin = origin;

try {
  await fetchEventSource(url, {
    method: "POST",
    credentials: "include",
    headers,
    body,
    openWhenHidden: true,
    async onopen(response) {
      print({
        kind: "open",
        status: response.status,
        headers: Object.fromEntries(response.headers.entries()),
      });
      const type = response.headers.get("content-type") || "";
      if (!response.ok || !type.startsWith("text/event-stream")) {
        throw new Error(`unexpected answer ${response.status} ${type}`);
      }
    },
    onmessage(event) {
      print({ kind: "message", id: event.id, event: event.event, data: event.data });
    },
    onclose() {
      print({ kind: "close" });
    },
    onerror(error) {
      throw error; // never retry: the test wants to see the failure
    },
  });
} catch (error) {
  print({ kind: "error", message: String(error) });
  process.exitCode = 1;
}
