// OpenSpec: changes with task progress and artifact states, specs, archived changes, and the workflow
// actions as buttons (an action's agent session opens in the Agent panel); refreshed on `file_changed`.
// @ts-check

import { call, workspacePath } from "./api.js";
import { describe, h, notice, replace } from "./dom.js";
import * as events from "./events.js";

/** @typedef {import("./wsruntime").components["schemas"]} Schemas */

/**
 * @param {HTMLElement} root
 * @param {import("./main.js").Console} app
 * @returns {{shown: () => void}}
 */
export function mount(root, app) {
  const status = h("div", { class: "notice", id: "openspec-notice", role: "status" });
  const body = h("div", { class: "scroll", id: "openspec-body" });
  replace(root, h("div", { class: "grow" }, h("div", { class: "toolbar" }, h("strong", {}, "OpenSpec"), h("button", { onclick: () => refresh() }, "Refresh")), status, body));

  /** @param {Schemas["OpenSpecAction"]} action @param {string | null} change */
  function actionButton(action, change) {
    return h(
      "button",
      { class: "action", title: action.command, dataset: { action: action.id, change: change || "" }, onclick: () => run(action, change) },
      action.id,
    );
  }

  /** @param {Schemas["OpenSpecAction"]} action @param {string | null} change */
  async function run(action, change) {
    /** @type {{change?: string, input?: string}} */
    const json = {};
    if (change) json.change = change;
    if (action.needs && action.needs.length) {
      const input = prompt(`${action.id}: the ${action.needs.join(", ")}`);
      if (!input) return;
      json.input = input;
    }
    try {
      const result = await call("POST", `${await workspacePath()}/openspec/actions/${encodeURIComponent(action.id)}`, { json });
      if (result && typeof result.id === "string") {
        const agent = await app.show("agent");
        await agent.open(result.id);
      } else {
        notice(status, "Done");
        await refresh();
      }
    } catch (error) {
      notice(status, describe(error), "error");
    }
  }

  async function refresh() {
    let state;
    try {
      state = await call("GET", `${await workspacePath()}/openspec`);
    } catch (error) {
      notice(status, describe(error), "error");
      return;
    }
    const parts = [];
    parts.push(
      h("div", { class: "cols" }, h("span", { class: "muted" }, state.initialized ? `schema ${state.schema || "?"}` : "Not initialised"),
        ...state.actions.map((/** @type {Schemas["OpenSpecAction"]} */ a) => actionButton(a, null))),
    );
    parts.push(h("h3", {}, "Changes"));
    const changes = h("ul", { class: "list", id: "openspec-changes" });
    for (const change of state.changes || []) {
      const { completed, total } = change.tasks;
      changes.append(
        h(
          "li",
          { dataset: { change: change.name } },
          h("strong", {}, change.name),
          h("span", { class: "badge" }, change.status),
          h("span", { class: "bar", title: `${completed}/${total} tasks` }, h("span", { style: `width:${total ? Math.round((100 * completed) / total) : 0}%` })),
          h("span", { class: "muted" }, `${completed}/${total}`),
          ...change.artifacts.map((/** @type {Schemas["OpenSpecArtifact"]} */ a) => h("span", { class: "badge", title: a.path || "" }, `${a.id}: ${a.status}`)),
          ...change.actions.map((/** @type {Schemas["OpenSpecAction"]} */ a) => actionButton(a, change.name)),
        ),
      );
    }
    if (!(state.changes || []).length) changes.append(h("li", { class: "muted" }, "No active change"));
    parts.push(changes, h("h3", {}, "Specs"));
    parts.push(
      h("ul", { class: "list" }, ...(state.specs || []).map((/** @type {any} */ s) => h("li", {}, h("span", {}, s.name), h("span", { class: "muted" }, `${s.requirements} requirements`)))),
    );
    parts.push(h("h3", {}, "Archived"));
    parts.push(h("ul", { class: "list" }, ...(state.archived || []).map((/** @type {any} */ a) => h("li", {}, `${a.date || ""} ${a.change || a.name}`))));
    replace(body, ...parts);
  }

  let timer = /** @type {ReturnType<typeof setTimeout> | null} */ (null);
  const soon = () => timer || (timer = setTimeout(() => ((timer = null), refresh()), 200));
  events.on("file_changed", (event) => event.path.startsWith("openspec") && soon());
  events.on("resync", soon);
  refresh();
  return { shown: () => {} };
}
