// Following one task's log: SSE over fetch with exact resume (Last-Event-ID), and a polling
// fallback (GET /api/tasks/{id}?after=N) once SSE has failed several times in a row.
//
// Every message is delivered once, in seq order: anything at or below the cursor is skipped, so a
// replay after a reconnect can never duplicate a fragment, and resume after cursor N asks the
// gateway for N+1, N+2 ... so none is missing. A replay sends a finished message as its final
// frame alone (compacted), and a long final as pieces with an `offset` (README, "Compacted
// replay"): they are joined here into that final frame before it is delivered.

import { SSEParser } from "./sse.js";

const TERMINAL = new Set(["COMPLETED", "FAILED", "CANCELLED"]);
const MAX_DELAY_MS = 30000;
const DEFAULT_RETRY_MS = 500;
const POLL_LIMIT = 500;
// The text payload field of each type a long final can be split in (DESIGN §3).
const TEXT_FIELDS = { plan_thought: "planThought", tool_thought: "toolThought", task_summary: "taskSummary", agent_stream: "result", result: "result" };

export const SSE_FAILURES_BEFORE_POLLING = 3;

export class FatalStreamError extends Error {}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

async function errorText(response) {
  try {
    const body = await response.json();
    if (body && body.error) return `${body.error.code}: ${body.error.message}`;
  } catch (_) {
    // not JSON: fall through
  }
  return `HTTP ${response.status}`;
}

/** Follows the log of `taskId` from `after`, calling `onMessage(msg)` and `onState(state)`. */
export class TaskStream {
  constructor({ gatewayUrl, taskId, after = 0, onMessage, onState }) {
    this.base = gatewayUrl.replace(/\/+$/, "");
    this.taskId = taskId;
    this.lastSeq = after;
    this.onMessage = onMessage;
    this.onState = onState || (() => {});
    this.controller = new AbortController();
    this.retryMs = null; // the gateway's `retry:` value, once seen
    this.finished = false;
    this.state = { mode: "sse", phase: "connecting", failures: 0, lastSeq: after };
    this.pieces = new Map(); // messageId → the text of a long final's pieces so far
  }

  get url() {
    return `${this.base}/api/tasks/${encodeURIComponent(this.taskId)}`;
  }

  /** Stop following (the task itself keeps running). */
  stop() {
    this.controller.abort(new DOMException("stopped", "AbortError"));
  }

  setState(changes) {
    Object.assign(this.state, changes, { lastSeq: this.lastSeq });
    this.onState({ ...this.state });
  }

  deliver(piece) {
    const message = this.joined(piece);
    if (!message || typeof message.seq !== "number" || message.seq <= this.lastSeq) return;
    this.lastSeq = message.seq;
    if (message.finish) this.finished = true;
    this.onMessage(message);
  }

  /** A piece of a long final (it has an `offset`): null until its last, then the whole final. */
  joined(message) {
    if (typeof message.offset !== "number") return message;
    const field = TEXT_FIELDS[message.messageType] || "result";
    const text = (message.offset === 0 ? "" : this.pieces.get(message.messageId) || "") + message[field];
    if (!message.isFinal) {
      this.pieces.set(message.messageId, text);
      return null;
    }
    this.pieces.delete(message.messageId);
    const { offset, ...whole } = message;
    return { ...whole, [field]: text };
  }

  /** Follow until the task's last message; resolves with its final snapshot (or null). */
  async run() {
    const signal = this.controller.signal;
    try {
      if (!(await this.runSSE(signal))) await this.runPolling(signal);
      this.setState({ phase: "done" });
      return await this.snapshot(signal);
    } catch (err) {
      if (signal.aborted) {
        this.setState({ phase: "closed" });
        return null;
      }
      this.setState({ phase: "error", error: String(err.message || err) });
      throw err;
    }
  }

  /** SSE with resume; true when the task finished, false to fall back to polling. */
  async runSSE(signal) {
    let failures = 0;
    for (;;) {
      const before = this.lastSeq;
      this.setState({ mode: "sse", phase: failures ? "reconnecting" : "connecting", failures });
      let reason = "the stream ended";
      try {
        if (await this.readEvents(signal)) return true;
      } catch (err) {
        if (signal.aborted || err instanceof FatalStreamError) throw err;
        reason = String(err.message || err);
      }
      if (this.finished) return true;
      failures = this.lastSeq > before ? 1 : failures + 1;
      if (failures >= SSE_FAILURES_BEFORE_POLLING) return false;
      const delay = Math.min(MAX_DELAY_MS, (this.retryMs ?? DEFAULT_RETRY_MS) * 2 ** (failures - 1));
      this.setState({ phase: "reconnecting", failures, reason, retryInMs: delay });
      await sleep(delay, signal);
    }
  }

  /** One SSE connection; true when the task has finished (its finish message, or a 204). */
  async readEvents(signal) {
    const headers = { Accept: "text/event-stream" };
    if (this.lastSeq > 0) headers["Last-Event-ID"] = String(this.lastSeq);
    const response = await fetch(`${this.url}/events`, { headers, signal, cache: "no-store" });
    if (response.status === 204) return true; // finished, and we have seen everything
    if (response.status >= 400 && response.status < 500 && response.status !== 429) {
      throw new FatalStreamError(await errorText(response));
    }
    if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
    this.setState({ mode: "sse", phase: "open", failures: 0 });
    const parser = new SSEParser();
    const reader = response.body.getReader();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return this.finished;
        for (const event of parser.feed(value)) this.deliver(JSON.parse(event.data));
        if (parser.retry !== null) this.retryMs = parser.retry;
        if (this.finished) return true;
      }
    } finally {
      reader.cancel().catch(() => {});
    }
  }

  /** Incremental polling, honouring Retry-After, with back-off on errors. */
  async runPolling(signal) {
    let errors = 0;
    while (!this.finished) {
      this.setState({ mode: "polling", phase: errors ? "reconnecting" : "open", failures: errors });
      let delay;
      try {
        const response = await fetch(`${this.url}?after=${this.lastSeq}&limit=${POLL_LIMIT}`, {
          signal,
          cache: "no-store",
        });
        if (response.status >= 400 && response.status < 500 && response.status !== 429) {
          throw new FatalStreamError(await errorText(response));
        }
        if (!response.ok) throw new Error(`HTTP ${response.status}`);
        const body = await response.json();
        errors = 0;
        for (const message of body.messages || []) this.deliver(message);
        if (this.finished) return;
        if (TERMINAL.has(body.status) && this.lastSeq >= body.lastSeq) return;
        const more = (body.messages || []).length >= POLL_LIMIT;
        const retryAfter = parseFloat(response.headers.get("Retry-After") || "1");
        delay = more ? 0 : (Number.isFinite(retryAfter) ? retryAfter : 1) * 1000;
      } catch (err) {
        if (signal.aborted || err instanceof FatalStreamError) throw err;
        errors += 1;
        delay = Math.min(MAX_DELAY_MS, DEFAULT_RETRY_MS * 2 ** errors);
        this.setState({ mode: "polling", phase: "reconnecting", failures: errors });
      }
      if (delay > 0) await sleep(delay, signal);
    }
  }

  async snapshot(signal) {
    try {
      const response = await fetch(this.url, { signal, cache: "no-store" });
      return response.ok ? await response.json() : null;
    } catch (_) {
      return null;
    }
  }
}

/** Submit a task; retried with the same Idempotency-Key, so a lost answer never runs it twice. */
export async function submitTask(gatewayUrl, request, { signal, attempts = 4 } = {}) {
  const key = crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`;
  let lastError;
  for (let attempt = 0; attempt < attempts; attempt++) {
    try {
      const response = await fetch(`${gatewayUrl.replace(/\/+$/, "")}/api/tasks`, {
        method: "POST",
        headers: { "Content-Type": "application/json", "Idempotency-Key": key },
        body: JSON.stringify(request),
        signal,
      });
      if (response.status === 202 || response.ok) return await response.json();
      if (response.status !== 429 && response.status < 500) {
        throw new FatalStreamError(await errorText(response));
      }
      lastError = new Error(await errorText(response));
    } catch (err) {
      if (err instanceof FatalStreamError || (signal && signal.aborted)) throw err;
      lastError = err;
    }
    await sleep(DEFAULT_RETRY_MS * 2 ** attempt, signal || new AbortController().signal);
  }
  throw lastError;
}
