// The console's entry: the token prompt, the tabs (one module per panel, mounted when first shown),
// and the status line (system_stats, the connection state, a reload on `resync`).
// @ts-check

import { call, getHealth, getToken, setToken, setUnauthorizedHandler } from "./api.js";
import { h, replace } from "./dom.js";
import * as events from "./events.js";

/**
 * What panels may ask of the page.
 * @typedef {object} Console
 * @property {(name: string) => Promise<any>} show switch to a panel (mounting it first); its module's handle
 */

/** @typedef {{mount: (root: HTMLElement, app: Console) => any}} PanelModule */

/** @type {Record<string, () => Promise<PanelModule>>} */
const PANELS = {
  files: () => import("./files.js"),
  agent: () => import("./agent.js"),
  terminal: () => import("./terminal.js"),
  git: () => import("./git.js"),
  scripts: () => import("./scripts.js"),
  openspec: () => import("./openspec.js"),
  settings: () => import("./settings.js"),
};
/** @type {Map<string, Promise<any>>} */
const mounted = new Map();

/** @type {Console} */
const app = { show };

/** @param {string} name @returns {Promise<any>} */
async function show(name) {
  if (!(name in PANELS)) name = "files";
  for (const tab of document.querySelectorAll("#tabs button")) {
    const active = /** @type {HTMLElement} */ (tab).dataset.panel === name;
    tab.setAttribute("aria-selected", String(active));
    tab.setAttribute("tabindex", active ? "0" : "-1");
  }
  for (const panel of document.querySelectorAll(".panel")) {
    /** @type {HTMLElement} */ (panel).hidden = panel.id !== `panel-${name}`;
  }
  if (location.hash !== `#${name}`) history.replaceState(null, "", `#${name}`);
  let handle = mounted.get(name);
  if (!handle) {
    const root = /** @type {HTMLElement} */ (document.getElementById(`panel-${name}`));
    handle = PANELS[name]().then((module) => module.mount(root, app));
    mounted.set(name, handle);
  }
  const panel = await handle;
  panel?.shown?.();
  return panel;
}

/** Ask for the token in the dialog; resolves when one was entered. @returns {Promise<void>} */
function askToken() {
  const dialog = /** @type {HTMLDialogElement} */ (document.getElementById("token-dialog"));
  const input = /** @type {HTMLInputElement} */ (document.getElementById("token-input"));
  if (dialog.open) return new Promise((resolve) => dialog.addEventListener("close", () => resolve(), { once: true }));
  return new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => {
        setToken(input.value.trim());
        input.value = "";
        resolve();
      },
      { once: true },
    );
    dialog.showModal();
    input.focus();
  });
}

function statusLine() {
  const footer = /** @type {HTMLElement} */ (document.getElementById("status"));
  const dot = h("span", { class: "dot" });
  const connection = h("span", { id: "connection" }, dot, "connecting");
  const stats = h("span", { id: "stats", class: "muted" });
  const note = h("span", { id: "status-note", class: "muted" });
  replace(footer, connection, stats, note);
  /** @param {string} state */
  const setState = (state) => {
    dot.className = `dot ${state}`;
    connection.lastChild && (connection.lastChild.textContent = state);
    connection.dataset.state = state;
  };
  setState(events.onConnection(setState));
  events.on("system_stats", (event) => {
    const s = event.stats;
    stats.textContent = `cpu ${s.cpu_percent.toFixed(0)}% · mem ${s.memory_percent.toFixed(0)}% · disk ${s.disk_percent.toFixed(0)}%`;
  });
  events.on("resync", () => {
    note.textContent = `resynced ${new Date().toLocaleTimeString()}`;
  });
  getHealth().then(
    (info) => {
      const name = /** @type {HTMLElement} */ (document.getElementById("workspace-name"));
      name.textContent = `${info.workspace_id} · ${info.version}`;
    },
    () => {},
  );
}

async function main() {
  setUnauthorizedHandler(askToken);
  for (const tab of document.querySelectorAll("#tabs button")) {
    tab.addEventListener("click", () => show(/** @type {HTMLElement} */ (tab).dataset.panel || "files"));
  }
  document.getElementById("tabs")?.addEventListener("keydown", (event) => {
    const tabs = [...document.querySelectorAll("#tabs button")];
    const index = tabs.indexOf(/** @type {Element} */ (document.activeElement));
    if (index < 0 || (event.key !== "ArrowRight" && event.key !== "ArrowLeft")) return;
    const next = /** @type {HTMLElement} */ (tabs[(index + (event.key === "ArrowRight" ? 1 : tabs.length - 1)) % tabs.length]);
    next.focus();
    show(next.dataset.panel || "files");
  });
  // One authenticated call before anything else: a runtime with a token asks for it here, once.
  if (!getToken()) {
    try {
      await call("GET", "/api/v1/files", { query: { path: "" } });
    } catch {
      // the panels show their own errors
    }
  }
  statusLine();
  events.start();
  await show(location.hash.slice(1) || "files");
  document.body.dataset.ready = "true";
}

main();
