// Rendering one task's messages (DESIGN §3). Frames are merged by messageId: the non-final
// frames of a message carry deltas (appended), its final frame the full content (replacing)
// and the message's definitive type (a model turn's text settles as a thought or the answer).

const ABBREVIATE_AT = 1200;
const TEXT_TYPES = new Set(["plan_thought", "tool_thought", "agent_stream", "task_summary"]);
const MAP_TYPES = new Set(["code", "markdown", "html", "deep_search", "file"]);
const APPENDED_FIELDS = new Set(["data", "answer"]); // resultMap fields streamed as deltas

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

export function abbreviate(text, limit = ABBREVIATE_AT) {
  const s = typeof text === "string" ? text : JSON.stringify(text, null, 1);
  if (s === undefined || s === null) return "";
  return s.length > limit ? `${s.slice(0, limit)}… (${s.length - limit} more characters)` : s;
}

function payloadOf(message) {
  switch (message.messageType) {
    case "plan_thought":
      return message.planThought;
    case "tool_thought":
      return message.toolThought;
    case "task_summary":
      return message.taskSummary;
    default:
      return message.result;
  }
}

/** The live view of one task: plan, task cards with tool output, the answer, the status. */
export class TaskView {
  constructor({ plan, tasks, answer, status, error }) {
    this.dom = { plan, tasks, answer, status, error };
    this.frames = new Map(); // messageId → {type, text, streamed, node, map}
    this.currentTask = null;
    this.seqs = [];
    this.answerText = "";
    this.deltaMismatches = 0;
    this.clear();
  }

  clear() {
    const { plan, tasks, answer, error } = this.dom;
    plan.replaceChildren();
    tasks.replaceChildren();
    answer.replaceChildren();
    answer.dataset.final = "false";
    error.replaceChildren();
    error.hidden = true;
    this.frames.clear();
    this.currentTask = null;
    this.stepCards = false;
    this.seqs = [];
    this.answerText = "";
    this.deltaMismatches = 0;
    this.setStatus("PENDING");
  }

  setStatus(status, error) {
    if (["COMPLETED", "FAILED", "CANCELLED"].includes(status)) {
      // A turn whose final frame never came: it stays visible, but not as "writing".
      for (const frame of this.frames.values()) if (frame.provisional) frame.node.dataset.state = "interrupted";
    }
    this.dom.status.dataset.status = status;
    this.dom.status.textContent = status;
    if (error) {
      this.dom.error.hidden = false;
      this.dom.error.textContent = error.code ? `${error.code}: ${error.message}` : String(error);
    }
  }

  apply(message) {
    this.seqs.push(message.seq);
    const type = message.messageType;
    if (this.dom.status.dataset.status === "PENDING") this.setStatus("RUNNING");
    if (type === "plan") this.renderPlan(message.plan);
    else if (type === "task") this.startTask(message.task);
    else if (TEXT_TYPES.has(type)) this.mergeText(message);
    else if (MAP_TYPES.has(type)) this.mergeMap(message);
    else if (type === "tool_result") this.renderToolResult(message.toolResult || {});
    else if (type === "result") this.finishWithResult(message);
    else if (type === "error") this.setStatus("FAILED", message.error);
    else if (type === "status") this.setStatus(message.status, message.error);
    else if (type === "reset") this.card().append(el("p", { class: "note" }, "Earlier history was trimmed; showing what remains."));
  }

  renderPlan(plan) {
    if (!plan) return;
    const steps = plan.steps || [];
    const statuses = plan.stepStatus || [];
    const list = el("ol", { class: "steps" });
    steps.forEach((step, i) => {
      const status = statuses[i] || "not_started";
      const item = el("li", { class: `step ${status}`, "data-status": status });
      item.append(el("span", { class: "step-status" }, status.replace(/_/g, " ")), el("span", { class: "step-text" }, String(step)));
      list.append(item);
    });
    const children = [el("h2", {}, plan.title || "Plan"), list];
    for (const note of plan.notes || []) if (note) children.push(el("p", { class: "note" }, String(note)));
    const thought = this.dom.plan.querySelector(".plan-thought");
    this.dom.plan.replaceChildren(...(thought ? [thought] : []), ...children);
  }

  startTask(task) {
    this.stepCards = true; // plan-and-execute: each step's work goes in its card
    const card = el("article", { class: "task" });
    card.append(el("h3", {}, typeof task === "string" ? task : abbreviate(task, 200)));
    this.dom.tasks.append(card);
    this.currentTask = card;
  }

  card() {
    if (!this.currentTask) this.startTask("Task");
    return this.currentTask;
  }

  frame(message, create) {
    let frame = this.frames.get(message.messageId);
    if (!frame) {
      frame = { type: message.messageType, text: "", streamed: "", deltas: 0, node: create(), map: {} };
      this.frames.set(message.messageId, frame);
    }
    return frame;
  }

  // Where a text message of `type` lives once settled.
  textNode(type) {
    if (type === "agent_stream") return this.dom.answer.appendChild(el("span", { class: "answer-part" }));
    if (type === "plan_thought") return this.dom.plan.insertBefore(el("p", { class: "plan-thought thought" }), this.dom.plan.firstChild);
    if (type === "task_summary") return this.card().appendChild(el("p", { class: "summary" }));
    return this.card().appendChild(el("p", { class: "thought" }));
  }

  // A model turn's text streams as tool_thought deltas before anyone knows whether it is a
  // thought or the answer (DESIGN §3): it is shown at once as a "writing" item where the
  // model's current output goes (the step's card in plan-and-execute, else the answer), and
  // settled by its final frame.
  provisionalNode() {
    const node = el("span", { class: "writing", "data-state": "writing" });
    if (this.stepCards && this.currentTask) return this.currentTask.appendChild(el("p", { class: "writing-turn" })).appendChild(node);
    return this.dom.answer.appendChild(node);
  }

  settle(frame, type) {
    const old = frame.node;
    const holder = old.parentElement && old.parentElement.classList.contains("writing-turn") ? old.parentElement : old;
    frame.node = this.textNode(type);
    holder.remove();
    frame.type = type;
    frame.provisional = false;
  }

  mergeText(message) {
    const type = message.messageType;
    const payload = payloadOf(message);
    const text = typeof payload === "string" ? payload : abbreviate(payload);
    const frame = this.frame(message, () => null);
    if (frame.node === null) {
      frame.provisional = type === "tool_thought" && !message.isFinal;
      frame.node = frame.provisional ? this.provisionalNode() : this.textNode(type);
    }
    if (message.isFinal) {
      if (frame.deltas > 0 && frame.streamed !== text) this.deltaMismatches += 1;
      frame.text = text;
      if (frame.provisional) this.settle(frame, type);
    } else {
      frame.deltas += 1;
      frame.streamed += text;
      frame.text += text;
    }
    frame.node.textContent = frame.text;
    this.answerText = this.answerOnly();
  }

  // The answer's settled text (a provisional item is not the answer yet).
  answerOnly() {
    return [...this.dom.answer.querySelectorAll(".answer-part")].map((n) => n.textContent).join("");
  }

  mergeMap(message) {
    const type = message.messageType;
    const update = message.resultMap || {};
    const frame = this.frame(message, () => {
      const box = el("section", { class: `tool-output ${type}` });
      box.append(el("h4", {}, type.replace("_", " ")), el("pre", { class: "body" }));
      return this.card().appendChild(box);
    });
    if (message.isFinal) frame.map = { ...update };
    else {
      for (const [key, value] of Object.entries(update)) {
        if (APPENDED_FIELDS.has(key) && typeof value === "string") frame.map[key] = (frame.map[key] || "") + value;
        else frame.map[key] = value;
      }
    }
    frame.node.querySelector(".body").textContent = describeMap(type, frame.map);
  }

  renderToolResult(result) {
    const details = el("details", { class: "tool-result" });
    details.append(el("summary", {}, `tool ${result.toolName || "?"}`));
    details.append(el("pre", { class: "param" }, abbreviate(result.toolParam, 400)));
    details.append(el("pre", { class: "output" }, abbreviate(result.toolResult)));
    this.card().append(details);
  }

  finishWithResult(message) {
    const text = typeof message.result === "string" ? message.result : abbreviate(message.result);
    // The result is authoritative: show it if the streamed answer was something else (or nothing).
    if (text && this.answerOnly() !== text) {
      this.dom.answer.querySelectorAll(".answer-part").forEach((n) => n.remove());
      this.dom.answer.append(el("span", { class: "answer-part" }, text));
    }
    this.answerText = this.answerOnly();
    this.dom.answer.dataset.final = "true";
    const files = (message.resultMap && message.resultMap.fileList) || [];
    if (files.length) {
      const list = el("ul", { class: "files" });
      for (const file of files) {
        const item = el("li");
        const href = file.downloadUrl || file.domainUrl || file.ossUrl;
        if (href) item.append(el("a", { href, target: "_blank", rel: "noopener" }, file.fileName || href));
        else item.textContent = file.fileName || JSON.stringify(file);
        list.append(item);
      }
      this.dom.answer.after(list);
    }
    this.setStatus("COMPLETED");
  }
}

function describeMap(type, map) {
  if (type === "code") {
    const parts = [];
    if (map.code) parts.push(abbreviate(map.code));
    if (map.codeOutput) parts.push(`--- output ---\n${abbreviate(map.codeOutput)}`);
    return parts.join("\n") || abbreviate(map);
  }
  if (type === "markdown" || type === "html") return abbreviate(map.data ?? map);
  if (type === "deep_search") {
    const parts = [];
    const queries = map.searchResult && map.searchResult.query;
    if (queries && queries.length) parts.push(`searched: ${queries.join(" · ")}`);
    if (map.answer) parts.push(abbreviate(map.answer));
    return parts.join("\n") || abbreviate(map);
  }
  const files = map.fileInfo || [];
  return files.length ? files.map((f) => f.fileName).join(", ") : abbreviate(map);
}
