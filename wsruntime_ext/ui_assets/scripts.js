// Scripts: the list, run one, its live output (resumed with `?after=` after a dropped connection), cancel.
// @ts-check

import { call, Stream } from "./api.js";
import { describe, h, notice, replace } from "./dom.js";
import * as events from "./events.js";

/** @typedef {import("./wsruntime").components["schemas"]} Schemas */

const CURRENT_KEY = "wsruntime.scripts.run";

/** @param {HTMLElement} root @returns {{shown: () => void}} */
export function mount(root) {
  /** @type {{id: string, stream: Stream, lastSeq: number} | null} */
  let run = null;
  const list = h("ul", { class: "list scroll", id: "script-list" });
  const runs = h("ul", { class: "list scroll", id: "script-runs" });
  const status = h("div", { class: "notice", id: "scripts-notice", role: "status" });
  const heading = h("span", { id: "script-heading", class: "muted" }, "No run");
  const runStatus = h("span", { id: "script-status", class: "badge" });
  const output = h("pre", { class: "output", id: "script-output" });
  replace(
    root,
    h("div", { class: "side" }, h("h3", {}, "Scripts"), list, h("h3", {}, "Recent runs"), runs),
    h(
      "div",
      { class: "grow" },
      h("div", { class: "toolbar" }, heading, runStatus, h("button", { id: "script-cancel", class: "danger", onclick: () => cancel() }, "Cancel")),
      status,
      output,
    ),
  );

  async function loadScripts() {
    try {
      const found = await call("GET", "/api/v1/scripts");
      replace(
        list,
        found.scripts.map((/** @type {Schemas["Script"]} */ s) =>
          h(
            "li",
            { dataset: { name: s.name } },
            h("button", { class: "primary", title: `Run ${s.name}`, onclick: () => start(s.name) }, "Run"),
            h("span", { class: "name" }, s.name),
            h("code", { class: "muted" }, s.command.join(" ")),
          ),
        ),
      );
      if (!found.scripts.length) list.append(h("li", { class: "muted" }, "No scripts (package.json, Makefile, scripts/, .wsruntime/scripts.json)"));
    } catch (error) {
      notice(status, describe(error), "error");
    }
  }

  async function loadRuns() {
    try {
      const found = await call("GET", "/api/v1/scripts/runs");
      replace(
        runs,
        found.runs.slice(0, 30).map((/** @type {Schemas["ScriptRun"]} */ r) =>
          h("li", {}, h("button", { class: "name", onclick: () => open(r.run_id) }, r.name), h("span", { class: "badge" }, r.status)),
        ),
      );
    } catch (error) {
      notice(status, describe(error), "error");
    }
  }

  /** @param {string} name */
  async function start(name) {
    try {
      const started = await call("POST", `/api/v1/scripts/${encodeURIComponent(name)}/run`, { json: {} });
      open(started.run_id);
    } catch (error) {
      notice(status, describe(error), "error");
    }
  }

  /** @param {string} id */
  function open(id) {
    run?.stream.close();
    sessionStorage.setItem(CURRENT_KEY, id);
    replace(output);
    notice(status, "");
    heading.textContent = id;
    runStatus.textContent = "running";
    const mine = { id, lastSeq: 0, stream: /** @type {any} */ (null) };
    run = mine;
    mine.stream = new Stream(`/api/v1/ws/scripts/runs/${encodeURIComponent(id)}`, {
      query: () => (mine.lastSeq ? { after: mine.lastSeq } : {}),
      onMessage: (frame) => {
        if (run !== mine) return;
        if (frame.type === "output") {
          if (frame.seq <= mine.lastSeq) return;
          mine.lastSeq = frame.seq;
          // Text nodes: script output is never markup.
          output.append(frame.stream === "stderr" ? h("span", { class: "stderr" }, frame.data) : document.createTextNode(frame.data));
          output.scrollTop = output.scrollHeight;
        } else if (frame.type === "output_dropped") {
          mine.lastSeq = frame.next_seq - 1;
          output.append(h("span", { class: "muted" }, `[${frame.frames} earlier output frames not kept]\n`));
        } else if (frame.type === "exit") {
          runStatus.textContent = `${frame.status}${frame.code !== null && frame.code !== undefined ? ` (exit ${frame.code})` : ""}`;
          runStatus.dataset.status = frame.status;
        }
      },
    });
  }

  async function cancel() {
    if (!run) return;
    try {
      await call("DELETE", `/api/v1/scripts/runs/${encodeURIComponent(run.id)}`);
    } catch (error) {
      notice(status, describe(error), "error");
    }
  }

  let timer = /** @type {ReturnType<typeof setTimeout> | null} */ (null);
  events.on("script_run", () => {
    if (timer) return;
    timer = setTimeout(() => ((timer = null), loadRuns()), 100);
  });
  events.on("file_changed", (event) => {
    if (/^(package\.json|Makefile|scripts\/|\.wsruntime\/scripts\.json)/.test(event.path)) loadScripts();
  });
  events.on("resync", () => (loadScripts(), loadRuns()));
  loadScripts();
  loadRuns();
  const last = sessionStorage.getItem(CURRENT_KEY);
  if (last) open(last);
  return { shown: () => {} };
}
