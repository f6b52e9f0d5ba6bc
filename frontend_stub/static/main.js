// The page: submit a query, follow the task live, cancel it, list past tasks.
// State for tests and curious users lives in data- attributes and in `window.agw`.

import { SSE_FAILURES_BEFORE_POLLING, TaskStream, submitTask } from "./stream.js";
import { TaskView } from "./render.js";

const config = window.AGW_CONFIG || { gatewayUrl: "http://127.0.0.1:8080" };
const gateway = config.gatewayUrl.replace(/\/+$/, "");
const $ = (id) => document.getElementById(id);

const view = new TaskView({
  plan: $("plan"),
  tasks: $("tasks"),
  answer: $("answer"),
  status: $("status"),
  error: $("error"),
});
const connection = $("connection");
const agentSelect = $("agent-type");
const deepThink = $("deep-think");
let current = null; // {taskId, stream}

const agw = { gateway, view, taskId: null, connection: null, get seqs() { return view.seqs; } };
window.agw = agw;

// The deep-think toggle picks plan-and-execute (3) or ReAct (5); the select also offers echo (0).
const initialType = new URLSearchParams(location.search).get("agentType");
if (initialType !== null && [...agentSelect.options].some((o) => o.value === initialType)) {
  agentSelect.value = initialType;
}
deepThink.checked = agentSelect.value === "3";
deepThink.addEventListener("change", () => {
  agentSelect.value = deepThink.checked ? "3" : "5";
});
agentSelect.addEventListener("change", () => {
  deepThink.checked = agentSelect.value === "3";
});

function showConnection(state) {
  agw.connection = state;
  connection.dataset.mode = state.mode;
  connection.dataset.phase = state.phase;
  connection.dataset.failures = String(state.failures || 0);
  const words = {
    connecting: "connecting…",
    open: state.mode === "sse" ? "live (SSE)" : "polling",
    reconnecting: state.retryInMs ? `reconnecting in ${(state.retryInMs / 1000).toFixed(1)} s…` : "reconnecting…",
    done: "finished",
    closed: "closed",
    error: `error: ${state.error || ""}`,
  };
  connection.textContent = `${words[state.phase] || state.phase} · seq ${state.lastSeq}`;
  if (state.mode === "polling") connection.title = `SSE failed ${SSE_FAILURES_BEFORE_POLLING} times in a row; polling instead`;
}

function setBusy(busy) {
  $("send").disabled = busy;
  $("cancel").disabled = !busy;
  document.body.dataset.busy = String(busy);
}

async function follow(taskId) {
  if (current) current.stream.stop();
  view.clear();
  agw.taskId = taskId;
  $("task-id").textContent = taskId;
  document.body.dataset.taskId = taskId;
  const stream = new TaskStream({
    gatewayUrl: gateway,
    taskId,
    onMessage: (message) => view.apply(message),
    onState: showConnection,
  });
  current = { taskId, stream };
  setBusy(true);
  try {
    const snapshot = await stream.run();
    if (snapshot && current && current.stream === stream) view.setStatus(snapshot.status, snapshot.error);
  } catch (err) {
    view.setStatus("ERROR", { code: "client", message: String(err.message || err) });
  } finally {
    if (current && current.stream === stream) {
      setBusy(false);
      current = null;
      refreshHistory();
    }
  }
}

$("ask").addEventListener("submit", async (event) => {
  event.preventDefault();
  const query = $("query").value.trim();
  if (!query) return;
  setBusy(true);
  view.clear();
  showConnection({ mode: "sse", phase: "connecting", failures: 0, lastSeq: 0 });
  try {
    const created = await submitTask(gateway, { query, agentType: Number(agentSelect.value) });
    refreshHistory();
    await follow(created.taskId);
  } catch (err) {
    setBusy(false);
    view.setStatus("ERROR", { code: "submit", message: String(err.message || err) });
  }
});

$("cancel").addEventListener("click", async () => {
  const taskId = agw.taskId;
  if (!taskId) return;
  $("cancel").disabled = true;
  try {
    const response = await fetch(`${gateway}/api/tasks/${encodeURIComponent(taskId)}/cancel`, { method: "POST" });
    const snapshot = await response.json();
    // The stream also ends with the CANCELLED status message; this covers a stream that is down.
    if (snapshot.status && ["COMPLETED", "FAILED", "CANCELLED"].includes(snapshot.status)) {
      view.setStatus(snapshot.status, snapshot.error);
    }
  } catch (err) {
    $("cancel").disabled = false;
    view.setStatus(view.dom.status.dataset.status, { code: "cancel", message: String(err.message || err) });
  }
});

async function refreshHistory() {
  const list = $("history");
  try {
    const response = await fetch(`${gateway}/api/tasks?limit=20`, { cache: "no-store" });
    if (!response.ok) return;
    const { tasks } = await response.json();
    list.replaceChildren(
      ...tasks.map((task) => {
        const item = document.createElement("li");
        item.dataset.taskId = task.taskId;
        item.dataset.status = task.status;
        const button = document.createElement("button");
        button.type = "button";
        button.textContent = `${new Date(task.createdAt).toLocaleTimeString()} · agent ${task.agentType}`;
        button.addEventListener("click", () => follow(task.taskId));
        const status = document.createElement("span");
        status.className = `badge ${task.status.toLowerCase()}`;
        status.textContent = task.status;
        item.append(button, status);
        return item;
      }),
    );
    list.dataset.loaded = "true";
  } catch (_) {
    // the gateway is unreachable; the list stays as it was
  }
}

document.body.dataset.ready = "true";
refreshHistory();
