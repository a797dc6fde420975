// Settings: each agent's settings, hooks and MCP servers per scope, edited as JSON; a refused body is
// shown at the JSON path of its problem, a concurrent change (412) offers a reload.
// @ts-check

import { ApiError, request } from "./api.js";
import { describe, h, notice, replace } from "./dom.js";
import * as events from "./events.js";

const PARTS = { settings: ["/api/v1/settings", "settings"], hooks: ["/api/v1/settings/hooks", "hooks"], mcp: ["/api/v1/settings/mcp", "mcpServers"] };

/** @param {HTMLElement} root @returns {{shown: () => void}} */
export function mount(root) {
  let etag = "";
  const agent = h("select", { id: "settings-agent", "aria-label": "Agent" }, ...["claude-code", "codex", "gemini", "qwen-code", "opencode"].map((a) => h("option", { value: a }, a)));
  const scope = h("select", { id: "settings-scope", "aria-label": "Scope" }, ...["project", "local", "user", "effective"].map((s) => h("option", { value: s }, s)));
  const part = h("select", { id: "settings-part", "aria-label": "Part" }, h("option", { value: "settings" }, "settings"), h("option", { value: "hooks" }, "hooks"), h("option", { value: "mcp" }, "MCP servers"));
  const where = h("span", { class: "muted", id: "settings-path" });
  const status = h("div", { class: "notice", id: "settings-notice", role: "status" });
  const text = h("textarea", { class: "code", id: "settings-json", spellcheck: "false", "aria-label": "JSON" });
  const save = h("button", { id: "settings-save", class: "primary", onclick: () => store() }, "Save");
  for (const select of [agent, scope, part]) select.addEventListener("change", () => load());
  replace(root, h("div", { class: "grow" }, h("div", { class: "toolbar" }, agent, scope, part, h("button", { onclick: () => load() }, "Reload"), save, where), status, text));

  function target() {
    const [path, key] = PARTS[/** @type {keyof typeof PARTS} */ (part.value)];
    return { path, key, query: { scope: scope.value, agent: agent.value } };
  }

  async function load() {
    const { path, key, query } = target();
    notice(status, "");
    try {
      const response = await request("GET", path, { query });
      etag = response.headers.get("ETag") || "";
      const answer = await response.json();
      text.value = JSON.stringify(answer[key] ?? {}, null, 2);
      where.textContent = `${answer.path || "(merged view, read-only)"}${answer.exists === false ? " (not created yet)" : ""}${answer.trusted === false ? " · not trusted" : ""}`;
      save.disabled = scope.value === "effective";
    } catch (error) {
      text.value = "";
      notice(status, describe(error), "error");
    }
  }

  async function store() {
    const { path, key, query } = target();
    delete status.dataset.path; // set again only by a refusal that names its JSON path
    let value;
    try {
      value = JSON.parse(text.value);
    } catch (error) {
      notice(status, `Not JSON: ${describe(error)}`, "error");
      return;
    }
    try {
      const response = await request("PUT", path, { query, json: { [key]: value }, headers: etag ? { "If-Match": etag } : {} });
      etag = response.headers.get("ETag") || "";
      const answer = await response.json();
      text.value = JSON.stringify(answer[key] ?? {}, null, 2);
      notice(status, `Saved ${answer.path}`);
    } catch (error) {
      if (error instanceof ApiError && error.code === "invalid_settings") {
        notice(status, `Refused at ${error.details.path}: ${error.message}`, "error");
        status.dataset.path = String(error.details.path);
      } else if (error instanceof ApiError && error.status === 412) {
        notice(status, "Changed elsewhere since you loaded it: Reload to see it (your text is kept until then).", "error");
      } else notice(status, describe(error), "error");
    }
  }

  events.on("resync", () => load());
  load();
  return { shown: () => {} };
}
