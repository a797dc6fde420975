// Git: status and diffs, stage/unstage/discard, commit, push/pull/fetch with progress, branches and
// checkout, the recent log; refreshed on `git_changed` and `file_changed`.
// @ts-check

import { call, workspacePath } from "./api.js";
import { describe, h, notice, replace } from "./dom.js";
import * as events from "./events.js";

/** @typedef {import("./wsruntime").components["schemas"]} Schemas */

/** @param {HTMLElement} root @returns {{shown: () => void}} */
export function mount(root) {
  const branchSelect = h("select", { id: "git-branch", "aria-label": "Branch", onchange: () => checkout(branchSelect.value, false) });
  const files = h("ul", { class: "list", id: "git-files" });
  const message = h("textarea", { id: "git-message", rows: 3, placeholder: "Commit message", "aria-label": "Commit message" });
  const status = h("div", { class: "notice", id: "git-notice", role: "status" });
  const progress = h("div", { class: "notice muted", id: "git-progress" });
  const diff = h("pre", { class: "diff output", id: "git-diff" });
  const log = h("ul", { class: "list", id: "git-log" });
  const side = h(
    "div",
    { class: "side" },
    h(
      "div",
      { class: "toolbar" },
      branchSelect,
      h("button", { onclick: () => newBranch() }, "New branch"),
      h("button", { id: "git-fetch", onclick: () => remote("fetch") }, "Fetch"),
      h("button", { id: "git-pull", onclick: () => remote("pull") }, "Pull"),
      h("button", { id: "git-push", onclick: () => remote("push") }, "Push"),
    ),
    progress,
    h("h3", {}, "Changes"),
    h("div", { class: "scroll" }, files),
    h(
      "form",
      { class: "toolbar", onsubmit: (/** @type {Event} */ e) => (e.preventDefault(), commit(false)) },
      message,
      h("button", { type: "button", id: "git-stage-all", onclick: () => stageAll() }, "Stage all"),
      h("button", { type: "submit", id: "git-commit", class: "primary" }, "Commit staged"),
      h("button", { type: "button", id: "git-commit-all", onclick: () => commit(true) }, "Commit all"),
    ),
  );
  replace(root, side, h("div", { class: "grow" }, status, h("h3", {}, "Diff"), diff, h("h3", {}, "Recent commits"), h("div", { class: "scroll" }, log)));

  /** @param {string} what @param {any} [json] @param {string} [method] */
  async function vc(what, json, method = json === undefined ? "GET" : "POST") {
    return call(method, `${await workspacePath()}/version-control/${what}`, json === undefined || method === "GET" ? { query: json } : { json });
  }

  async function refresh() {
    try {
      const [state, branches, history] = await Promise.all([vc("status"), vc("branches"), vc("log", { limit: 20 }, "GET")]);
      replace(
        files,
        state.files.map((/** @type {Schemas["GitFileStatus"]} */ f) =>
          h(
            "li",
            { dataset: { path: f.path } },
            h("code", { class: "badge", title: f.status }, `${f.index}${f.worktree}`),
            h("button", { class: "name", onclick: () => showDiff(f.path, f.staged && f.worktree === ".") }, f.path),
            f.worktree !== "." ? h("button", { onclick: () => act("stage", f.path) }, "Stage") : null,
            f.staged ? h("button", { onclick: () => act("unstage", f.path) }, "Unstage") : null,
            h("button", { class: "danger", onclick: () => discard(f) }, "Discard"),
          ),
        ),
      );
      if (!state.files.length) files.append(h("li", { class: "muted" }, "No changes"));
      replace(
        branchSelect,
        branches.branches.map((/** @type {Schemas["GitBranch"]} */ b) => h("option", { value: b.name }, b.name)),
      );
      branchSelect.value = branches.current || "";
      replace(
        log,
        history.commits.map((/** @type {Schemas["GitLogCommit"]} */ c) =>
          h("li", {}, h("code", { class: "muted" }, c.short_hash), h("span", { class: "subject" }, c.subject), h("span", { class: "muted" }, c.author_name)),
        ),
      );
    } catch (error) {
      notice(status, describe(error), "error");
    }
  }

  /** @param {string} path @param {boolean} staged */
  async function showDiff(path, staged) {
    try {
      const result = await vc("diff", { path, staged: staged ? "true" : undefined }, "GET");
      replace(
        diff,
        result.diff.split("\n").map((/** @type {string} */ line) => {
          const kind = line.startsWith("+") ? "add" : line.startsWith("-") ? "del" : line.startsWith("@@") ? "hunk" : "";
          return h("span", { class: kind }, `${line}\n`);
        }),
      );
      if (!result.diff) diff.textContent = "(no textual difference: an untracked or binary file)";
    } catch (error) {
      notice(status, describe(error), "error");
    }
  }

  /** @param {"stage" | "unstage"} what @param {string} path */
  async function act(what, path) {
    try {
      await vc(what, { paths: [path] });
      await refresh();
    } catch (error) {
      notice(status, describe(error), "error");
    }
  }

  async function stageAll() {
    try {
      await vc("stage", { all: true });
      await refresh();
    } catch (error) {
      notice(status, describe(error), "error");
    }
  }

  /** @param {Schemas["GitFileStatus"]} f */
  async function discard(f) {
    if (!confirm(`Throw away the changes to ${f.path}?`)) return;
    try {
      await vc("discard", { paths: [f.path], untracked: f.status === "untracked" ? true : undefined, staged: f.staged ? true : undefined });
      await refresh();
    } catch (error) {
      notice(status, describe(error), "error");
    }
  }

  /** @param {boolean} all */
  async function commit(all) {
    const text = message.value.trim();
    if (!text) return notice(status, "Write a commit message first.", "error");
    try {
      const result = await vc("commit", all ? { message: text, all: true } : { message: text });
      message.value = "";
      notice(status, `Committed ${result.short_hash} on ${result.branch}`);
      await refresh();
    } catch (error) {
      notice(status, describe(error), "error");
    }
  }

  /** @param {"fetch" | "pull" | "push"} what */
  async function remote(what) {
    notice(status, `${what}…`);
    try {
      const result = await vc(what, {});
      notice(status, `${what}: ${result.output || "done"}`.trim());
      await refresh();
    } catch (error) {
      notice(status, describe(error), "error");
    }
  }

  /** @param {string} branch @param {boolean} create */
  async function checkout(branch, create) {
    try {
      await vc("checkout", { branch, create });
      await refresh();
    } catch (error) {
      notice(status, describe(error), "error");
      await refresh();
    }
  }

  async function newBranch() {
    const name = prompt("New branch name");
    if (name) await checkout(name, true);
  }

  let timer = /** @type {ReturnType<typeof setTimeout> | null} */ (null);
  const soon = () => {
    if (timer) return;
    timer = setTimeout(() => {
      timer = null;
      refresh();
    }, 200);
  };
  events.on("git_changed", soon);
  events.on("file_changed", soon);
  events.on("resync", soon);
  events.on("git_progress", (event) => {
    progress.textContent = `${event.operation}: ${event.line || event.phase || ""} ${typeof event.percent === "number" ? `${event.percent}%` : ""}`;
  });
  refresh();
  return { shown: () => {} };
}
