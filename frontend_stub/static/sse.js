// An incremental Server-Sent Events parser following the WHATWG rules
// (https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation):
// lines end at CR, LF or CRLF (a CRLF may be split across chunks); one leading BOM is dropped;
// comment lines are ignored; data lines are joined with "\n"; an id containing NUL is ignored;
// retry must be ASCII digits; a blank line dispatches the event unless its data is empty.

export class SSEParser {
  constructor() {
    this.decoder = new TextDecoder("utf-8");
    this.pending = "";
    this.started = false;
    this.skipLF = false;
    this.data = [];
    this.event = "";
    this.lastEventId = "";
    this.retry = null;
  }

  /** Feed a chunk of bytes (Uint8Array); returns the events it completes: {data, event, id, retry}. */
  feed(chunk) {
    let text = this.decoder.decode(chunk, { stream: true });
    if (!text) return [];
    if (!this.started) {
      this.started = true;
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    }
    if (this.skipLF) {
      this.skipLF = false;
      if (text.startsWith("\n")) text = text.slice(1);
    }
    const buffer = this.pending + text;
    const events = [];
    let pos = 0;
    const lineEnd = /\r\n|\r|\n/g;
    let match;
    while ((match = lineEnd.exec(buffer)) !== null) {
      if (match[0] === "\r" && match.index + 1 === buffer.length) this.skipLF = true;
      const event = this.processLine(buffer.slice(pos, match.index));
      if (event) events.push(event);
      pos = lineEnd.lastIndex;
    }
    this.pending = buffer.slice(pos);
    return events;
  }

  processLine(line) {
    if (line === "") return this.dispatch();
    if (line.startsWith(":")) return null;
    const colon = line.indexOf(":");
    const name = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (name === "data") this.data.push(value);
    else if (name === "event") this.event = value;
    else if (name === "id") {
      if (!value.includes("\0")) this.lastEventId = value;
    } else if (name === "retry") {
      if (/^[0-9]+$/.test(value)) this.retry = parseInt(value, 10);
    }
    return null;
  }

  dispatch() {
    const data = this.data;
    const event = this.event;
    this.data = [];
    this.event = "";
    if (data.length === 0) return null;
    return { data: data.join("\n"), event: event || "message", id: this.lastEventId };
  }
}
