// Terminal: terminals in tabs on pty processes (a vendored xterm.js and its fit add-on), resized with
// the window, still there after a reload (the running terminals are listed and replayed from byte 0;
// a dropped connection resumes at the byte offset it had).
// @ts-check

import { call, Stream } from "./api.js";
import { describe, h, notice, replace } from "./dom.js";
import * as events from "./events.js";

/** @typedef {import("./wsruntime").components["schemas"]} Schemas */

// In variables: tsc leaves the vendored modules alone (typed `any` here).
const XTERM = "./vendor/xterm.js";
const FIT = "./vendor/addon-fit.js";
/** @type {Promise<{Terminal: any, FitAddon: any}> | null} */
let vendored = null;

function loadXterm() {
  if (!vendored) {
    const css = h("link", { rel: "stylesheet", href: "/ui/vendor/xterm.css" });
    document.head.append(css);
    vendored = Promise.all([import(XTERM), import(FIT)]).then(([x, f]) => ({ Terminal: x.Terminal, FitAddon: f.FitAddon }));
  }
  return vendored;
}

/**
 * @typedef {object} Tab
 * @property {string} id
 * @property {any} term
 * @property {any} fit
 * @property {Stream} stream
 * @property {number} offset bytes of output received so far
 * @property {HTMLElement} host
 * @property {HTMLButtonElement} button
 * @property {boolean} ended
 */

/** @param {HTMLElement} root @returns {{shown: () => void}} */
export function mount(root) {
  /** @type {Map<string, Tab>} */
  const tabs = new Map();
  /** @type {Tab | null} */
  let active = null;
  const bar = h("div", { class: "term-tabs", role: "tablist", "aria-label": "Terminals" });
  const addButton = h("button", { id: "terminal-new", title: "New terminal", onclick: () => create() }, "+ New terminal");
  const closeButton = h("button", { id: "terminal-close", class: "danger", onclick: () => closeActive() }, "Close");
  const status = h("div", { class: "notice", id: "terminal-notice", role: "status" });
  const hosts = h("div", { class: "grow", id: "terminals" });
  replace(root, h("div", { class: "grow" }, h("div", { class: "toolbar" }, bar, addButton, closeButton), status, hosts));

  async function create() {
    try {
      const process = await call("POST", "/api/v1/processes", { json: { pty: { cols: 100, rows: 30 }, name: "console terminal" } });
      await attach(process, true);
    } catch (error) {
      notice(status, describe(error), "error");
    }
  }

  /**
   * @param {Schemas["Process"]} process
   * @param {boolean} focus
   */
  async function attach(process, focus) {
    if (tabs.has(process.id)) return;
    const { Terminal, FitAddon } = await loadXterm();
    const term = new Terminal({ cursorBlink: true, fontSize: 13, scrollback: 5000, theme: { background: "#15161a" } });
    const fit = new FitAddon();
    term.loadAddon(fit);
    const host = h("div", { class: "term", dataset: { process: process.id }, hidden: true });
    hosts.append(host);
    term.open(host);
    const button = h("button", { role: "tab", onclick: () => select(tab) }, `${process.id.slice(-6)}`);
    bar.append(button);
    /** @type {Tab} */
    const tab = { id: process.id, term, fit, host, button, offset: 0, ended: false, stream: /** @type {any} */ (null) };
    tabs.set(process.id, tab);
    const decoder = new TextDecoder();
    tab.stream = new Stream(`/api/v1/ws/processes/${encodeURIComponent(process.id)}`, {
      query: () => ({ after: tab.offset }),
      onMessage: (data, binary) => {
        if (binary) {
          const bytes = new Uint8Array(data);
          tab.offset += bytes.byteLength;
          term.write(bytes);
        } else if (data.type === "hello") {
          if (typeof data.offset === "number") tab.offset = data.offset;
        } else if (data.type === "exit") {
          tab.ended = true;
          term.write(`\r\n[process ${data.status}${data.code !== null && data.code !== undefined ? ` ${data.code}` : ""}]\r\n`);
          button.textContent += " (ended)";
        } else if (data.type === "output") {
          term.write(decoder.decode(new TextEncoder().encode(data.data)));
        }
      },
    });
    term.onData((/** @type {string} */ data) => tab.stream.send({ type: "input", data }));
    term.onResize((/** @type {{cols: number, rows: number}} */ size) => tab.stream.send({ type: "resize", ...size }));
    if (focus || !active) select(tab);
  }

  /** @param {Tab} tab */
  function select(tab) {
    active = tab;
    for (const other of tabs.values()) {
      other.host.hidden = other !== tab;
      other.button.setAttribute("aria-selected", String(other === tab));
    }
    requestAnimationFrame(() => {
      fitActive();
      tab.term.focus();
    });
  }

  function fitActive() {
    if (active && !root.hidden && active.host.clientWidth > 0) active.fit.fit();
  }

  async function closeActive() {
    const tab = active;
    if (!tab) return;
    tabs.delete(tab.id);
    tab.stream.close();
    tab.term.dispose();
    tab.host.remove();
    tab.button.remove();
    active = null;
    const next = [...tabs.values()].pop();
    if (next) select(next);
    if (!tab.ended) await call("DELETE", `/api/v1/processes/${encodeURIComponent(tab.id)}`).catch(() => {});
  }

  async function restore() {
    try {
      const { processes } = await call("GET", "/api/v1/processes", { query: { status: "running" } });
      const terminals = processes.filter((/** @type {Schemas["Process"]} */ p) => p.pty).reverse();
      for (const process of terminals) await attach(process, false);
      if (!terminals.length) await create();
    } catch (error) {
      notice(status, describe(error), "error");
    }
  }

  window.addEventListener("resize", fitActive);
  events.on("process", (event) => {
    if (event.status !== "running" && tabs.has(event.id)) /** @type {Tab} */ (tabs.get(event.id)).ended = true;
  });
  restore();
  return { shown: () => requestAnimationFrame(fitActive) };
}
