// Agent: pick an agent, start a session, its messages as they arrive (markdown through marked and
// DOMPurify; thinking and tool calls folded with their results; text shown as it is written, from
// the live deltas, until its complete frame replaces it), permission prompts answered with
// Allow / Deny, interrupt, follow-ups, earlier sessions listed and resumed.
// @ts-check

import { ApiError, call, Stream } from "./api.js";
import { describe, h, notice, replace } from "./dom.js";
import * as events from "./events.js";

/** @typedef {import("./wsruntime").components["schemas"]} Schemas */
/** @typedef {Schemas["AgentMessage"]} AgentMessage */
/** @typedef {Schemas["AgentSession"]} AgentSession */
/** @typedef {Schemas["AgentLiveFrame"]} AgentLiveFrame */
/** @typedef {{kind: string, block: number, node: HTMLElement, text: HTMLElement}} LiveBlock */

const CURRENT_KEY = "wsruntime.agent.session";
// In a variable: tsc leaves the vendored bundle alone (typed `any` here).
const MARKDOWN = "./vendor/markdown.js";
/** @type {Promise<(text: string) => DocumentFragment> | null} */
let renderer = null;

/** @returns {Promise<(text: string) => DocumentFragment>} markdown → a sanitised fragment (never a string) */
function markdown() {
  if (!renderer) {
    renderer = import(MARKDOWN).then(({ Marked, DOMPurify }) => {
      const marked = new Marked({ async: false, gfm: true, breaks: true });
      return (/** @type {string} */ text) =>
        DOMPurify.sanitize(marked.parse(text), { RETURN_DOM_FRAGMENT: true, FORBID_TAGS: ["style", "form", "img", "svg", "math"] });
    });
  }
  return renderer;
}

/** @param {unknown} value @returns {string} */
function pretty(value) {
  return typeof value === "string" ? value : JSON.stringify(value, null, 2);
}

/** @param {HTMLElement} root @returns {{shown: () => void, open: (id: string) => Promise<void>}} */
export function mount(root) {
  /** @type {{id: string, stream: Stream, lastSeq: number, tools: Map<string, HTMLElement>, ended: boolean, live: LiveBlock | null} | null} */
  let session = null;
  /** @type {Map<string, string[]>} agent name → its capabilities */
  const capabilities = new Map();

  const agentSelect = h("select", { id: "agent-select", "aria-label": "Agent" });
  const prompt = h("textarea", { id: "agent-prompt", rows: 3, placeholder: "What should the agent do?", "aria-label": "Prompt" });
  const askBox = h("input", { type: "checkbox", id: "agent-ask", checked: true });
  const sessions = h("ul", { class: "list scroll", id: "agent-sessions", "aria-label": "Sessions" });
  const status = h("div", { class: "notice", id: "agent-notice", role: "status" });
  const heading = h("span", { id: "agent-heading", class: "muted" }, "No session");
  const log = h("div", { class: "scroll", id: "agent-log", "aria-live": "polite" });
  const followUp = h("textarea", { id: "agent-followup", rows: 2, placeholder: "Follow-up message", "aria-label": "Follow-up" });
  const side = h(
    "div",
    { class: "side" },
    h(
      "form",
      { class: "toolbar", onsubmit: (/** @type {Event} */ e) => (e.preventDefault(), start()) },
      agentSelect,
      h("label", {}, askBox, " ask before tools"),
      prompt,
      h("button", { type: "submit", id: "agent-start", class: "primary" }, "Start session"),
    ),
    h("h3", {}, "Sessions"),
    sessions,
  );
  const main = h(
    "div",
    { class: "grow" },
    h(
      "div",
      { class: "toolbar" },
      heading,
      h("button", { id: "agent-interrupt", onclick: () => act("interrupt") }, "Interrupt"),
      h("button", { id: "agent-stop", class: "danger", onclick: () => act("stop") }, "Stop"),
      h("button", { id: "agent-resume", onclick: () => resume() }, "Resume"),
    ),
    status,
    log,
    h(
      "form",
      { class: "composer", onsubmit: (/** @type {Event} */ e) => (e.preventDefault(), send()) },
      followUp,
      h("button", { type: "submit", id: "agent-send" }, "Send"),
    ),
  );
  replace(root, side, main);

  async function loadAgents() {
    try {
      const { agents } = await call("GET", "/api/v1/agents");
      for (const a of agents) capabilities.set(a.name, a.capabilities || []);
      replace(
        agentSelect,
        agents.map((/** @type {Schemas["AgentInfo"]} */ a) =>
          h("option", { value: a.name, disabled: !a.available && !a.detecting }, `${a.name}${a.available ? "" : " (not installed)"}`),
        ),
      );
      const first = agents.find((/** @type {Schemas["AgentInfo"]} */ a) => a.available);
      if (first) agentSelect.value = first.name;
    } catch (error) {
      notice(status, describe(error), "error");
    }
  }

  async function loadSessions() {
    try {
      const list = await call("GET", "/api/v1/agent-sessions");
      replace(
        sessions,
        list.sessions.map((/** @type {AgentSession} */ s) =>
          h(
            "li",
            { class: session && session.id === s.id ? "selected" : "", dataset: { id: s.id } },
            h("button", { class: "name", onclick: () => open(s.id) }, (s.prompt || "").slice(0, 60) || s.id),
            h("span", { class: "badge" }, s.agent),
            h("span", { class: "badge" }, s.status),
          ),
        ),
      );
    } catch (error) {
      notice(status, describe(error), "error");
    }
  }

  async function start() {
    const text = prompt.value.trim();
    if (!text) return;
    try {
      const created = await call("POST", "/api/v1/agent-sessions", {
        json: {
          prompt: text,
          agent: agentSelect.value,
          interactive: true,
          permission_prompts: askBox.checked,
          deltas: (capabilities.get(agentSelect.value) || []).includes("deltas"),
        },
      });
      prompt.value = "";
      await open(created.id);
      loadSessions();
    } catch (error) {
      notice(status, describe(error), "error");
    }
  }

  async function resume() {
    if (!session) return;
    const text = followUp.value.trim() || "Continue.";
    try {
      const body = { prompt: text, resume: session.id, interactive: true, permission_prompts: askBox.checked, deltas: true };
      let created;
      try {
        created = await call("POST", "/api/v1/agent-sessions", { json: body });
      } catch (error) {
        // An agent that resumes only one turn at a time (Gemini): resume it so, without the live options.
        if (!(error instanceof ApiError) || error.code !== "unsupported_option") throw error;
        created = await call("POST", "/api/v1/agent-sessions", {
          json: { prompt: text, resume: body.resume, interactive: false, permission_prompts: false, deltas: false },
        });
      }
      followUp.value = "";
      await open(created.id);
      loadSessions();
    } catch (error) {
      notice(status, describe(error), "error");
    }
  }

  /** @param {string} id */
  async function open(id) {
    session?.stream.close();
    sessionStorage.setItem(CURRENT_KEY, id);
    replace(log);
    notice(status, "");
    heading.textContent = id;
    const mine = { id, lastSeq: 0, tools: new Map(), ended: false, live: null, stream: /** @type {any} */ (null) };
    session = mine;
    mine.stream = new Stream(`/api/v1/ws/agent-sessions/${encodeURIComponent(id)}`, {
      query: () => (mine.lastSeq ? { after: mine.lastSeq } : {}),
      onMessage: (frame) => {
        if (typeof frame.seq === "number") {
          if (frame.seq <= mine.lastSeq) return; // never shown twice
          mine.lastSeq = frame.seq;
        }
        show(mine, frame);
      },
    });
    for (const item of sessions.children) item.classList.toggle("selected", /** @type {HTMLElement} */ (item).dataset.id === id);
  }

  /**
   * A live delta: appended as plain text to the block being written (never markdown until it is complete).
   * @param {{live: LiveBlock | null}} mine
   * @param {AgentLiveFrame} frame
   */
  function showDelta(mine, frame) {
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    let live = mine.live;
    if (!live || live.kind !== frame.type || live.block !== frame.block) {
      live?.node.remove();
      const text = h("pre", { class: "live" }, "");
      const node = h("div", { class: `msg ${frame.type === "text_delta" ? "text" : "thinking"} live` }, text);
      live = { kind: frame.type, block: frame.block, node, text };
      mine.live = live;
      log.append(node);
    }
    live.text.textContent += frame.content;
    if (atBottom) log.scrollTop = log.scrollHeight;
  }

  /**
   * @param {{id: string, tools: Map<string, HTMLElement>, ended: boolean, live: LiveBlock | null}} mine
   * @param {AgentMessage & Record<string, any>} frame
   */
  function show(mine, frame) {
    if (session !== mine) return;
    const kind = /** @type {string} */ (frame.type);
    if (kind === "text_delta" || kind === "thinking_delta") {
      showDelta(mine, /** @type {AgentLiveFrame} */ (/** @type {unknown} */ (frame)));
      return;
    }
    // A stored frame: the block written live is complete now (its own frame shows it), or was cut short.
    mine.live?.node.remove();
    mine.live = null;
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    /** @type {HTMLElement | null} */
    let node = null;
    switch (frame.type) {
      case "text": {
        const body = h("div", { class: "md" });
        node = h("div", { class: "msg text", dataset: { seq: String(frame.seq) } }, body);
        markdown().then((render) => body.append(render(frame.content || "")));
        break;
      }
      case "thinking":
        node = h("div", { class: "msg thinking" }, h("details", {}, h("summary", {}, "Thinking"), h("pre", {}, frame.content || "")));
        break;
      case "tool_use": {
        const details = h("details", {}, h("summary", {}, `Tool: ${frame.tool || "?"}`), h("pre", {}, pretty(frame.input || {})));
        node = h("div", { class: "msg tool" }, details);
        if (frame.tool_use_id) mine.tools.set(frame.tool_use_id, details);
        break;
      }
      case "tool_result": {
        const result = h("pre", { class: frame.is_error ? "stderr" : "" }, frame.output || frame.error || "");
        const owner = frame.tool_use_id ? mine.tools.get(frame.tool_use_id) : undefined;
        if (owner) {
          owner.append(h("div", { class: "muted" }, frame.is_error ? "Result (error)" : "Result"), result);
          /** @type {HTMLElement} */ (owner.querySelector("summary")).textContent += frame.is_error ? " ✗" : " ✓";
        } else node = h("div", { class: "msg tool" }, h("details", {}, h("summary", {}, `Result: ${frame.tool || "?"}`), result));
        break;
      }
      case "permission_request":
        node = permission(mine, frame);
        break;
      case "done":
        node = h("div", { class: "msg done" }, `Turn done${typeof frame.cost_usd === "number" ? ` · $${frame.cost_usd.toFixed(4)}` : ""}`);
        break;
      case "error":
        node = h("div", { class: "msg error" }, `Error: ${frame.error || ""}`);
        break;
      case "status":
        node = h("div", { class: "msg status", dataset: { status: frame.status } }, `Session ${frame.status}`);
        if (["completed", "failed", "terminated", "interrupted"].includes(frame.status || "")) mine.ended = true;
        break;
      default:
        return; // types this console does not know yet are left out
    }
    if (node) log.append(node);
    if (atBottom) log.scrollTop = log.scrollHeight;
  }

  /**
   * @param {{id: string}} mine
   * @param {Record<string, any>} frame
   * @returns {HTMLElement}
   */
  function permission(mine, frame) {
    const box = h("div", { class: "msg permission", dataset: { request: frame.request_id } });
    /** @param {"allow" | "deny"} behavior */
    const answer = async (behavior) => {
      try {
        await call("POST", `/api/v1/agent-sessions/${encodeURIComponent(mine.id)}/permissions/${encodeURIComponent(frame.request_id)}`, {
          json: { behavior },
        });
        replace(box, `${behavior === "allow" ? "Allowed" : "Denied"}: ${frame.tool}`);
      } catch (error) {
        replace(box, `Could not answer: ${describe(error)}`);
      }
    };
    replace(
      box,
      h("div", {}, `The agent asks to use ${frame.tool}:`),
      h("pre", {}, pretty(frame.input || {})),
      h("button", { class: "primary", onclick: () => answer("allow") }, "Allow"),
      " ",
      h("button", { class: "danger", onclick: () => answer("deny") }, "Deny"),
    );
    return box;
  }

  async function send() {
    const text = followUp.value.trim();
    if (!session || !text) return;
    try {
      await call("POST", `/api/v1/agent-sessions/${encodeURIComponent(session.id)}/messages`, { json: { content: text } });
      log.append(h("div", { class: "msg user" }, text));
      followUp.value = "";
    } catch (error) {
      notice(status, describe(error), "error");
    }
  }

  /** @param {"interrupt" | "stop"} what */
  async function act(what) {
    if (!session) return;
    const path = `/api/v1/agent-sessions/${encodeURIComponent(session.id)}`;
    try {
      if (what === "interrupt") await call("POST", `${path}/interrupt`);
      else await call("DELETE", path);
      notice(status, what === "interrupt" ? "Interrupted" : "Stopped");
    } catch (error) {
      notice(status, describe(error), "error");
    }
  }

  events.on("agent_session", () => loadSessions());
  events.on("resync", () => loadSessions());
  loadAgents();
  loadSessions();
  const last = sessionStorage.getItem(CURRENT_KEY);
  if (last) open(last);
  return { shown: () => {}, open };
}
