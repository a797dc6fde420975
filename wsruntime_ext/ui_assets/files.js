// Files: a tree that follows `file_changed`; open, edit and save with If-Match (a 412 shows the
// conflict and offers reload or overwrite); new file/folder, rename, delete, drag-and-drop upload, search.
// @ts-check

import { ApiError, call, filePath, request, upload } from "./api.js";
import { createEditor } from "./editor.js";
import { describe, h, notice, replace, size } from "./dom.js";
import * as events from "./events.js";

/** @typedef {import("./wsruntime").components["schemas"]} Schemas */
/** @typedef {Schemas["FileEntry"]} FileEntry */

/** @param {string} path @returns {string} its parent ("" for the root) */
function parentOf(path) {
  const cut = path.lastIndexOf("/");
  return cut < 0 ? "" : path.slice(0, cut);
}

/** @param {HTMLElement} root @returns {{shown: () => void, open: (path: string) => Promise<void>}} */
export function mount(root) {
  /** @type {Map<string, FileEntry[]>} listings of the folders shown */
  const listings = new Map();
  /** @type {Set<string>} */
  const expanded = new Set([""]);
  /** @type {{path: string, etag: string, dirty: boolean, editor: import("./editor.js").Editor | null} | null} */
  let current = null;
  let loading = false;

  const tree = h("div", { class: "tree scroll", id: "file-tree", role: "tree", "aria-label": "Workspace files" });
  const progress = h("div", { class: "progress", style: "width:0" });
  const status = h("div", { class: "notice", id: "files-notice", role: "status" });
  const search = h("input", { type: "search", placeholder: "Search contents", id: "file-search", "aria-label": "Search" });
  const results = h("ul", { class: "list", id: "search-results" });
  const picker = h("input", { type: "file", multiple: true, hidden: true, onchange: () => uploadFiles([...(picker.files || [])]) });
  const side = h(
    "div",
    { class: "side" },
    h(
      "div",
      { class: "toolbar" },
      h("button", { id: "new-file", onclick: () => create("file") }, "New file"),
      h("button", { id: "new-folder", onclick: () => create("folder") }, "New folder"),
      h("button", { id: "upload", onclick: () => picker.click() }, "Upload"),
      picker,
    ),
    h(
      "form",
      { class: "toolbar", onsubmit: (/** @type {Event} */ e) => (e.preventDefault(), runSearch()) },
      search,
      h("button", { type: "submit" }, "Search"),
    ),
    results,
    progress,
    tree,
  );
  const title = h("span", { id: "editor-path", class: "muted" }, "No file open");
  const saveButton = h("button", { id: "save", class: "primary", disabled: true, onclick: () => save(false) }, "Save");
  const conflict = h(
    "div",
    { class: "conflict", id: "conflict", hidden: true, role: "alert" },
    h("span", {}, "The file changed on disk since you opened it."),
    h("button", { id: "conflict-reload", onclick: () => current && open(current.path) }, "Reload (lose my edits)"),
    h("button", { id: "conflict-overwrite", class: "danger", onclick: () => save(true) }, "Overwrite"),
  );
  const editorHost = h("div", { class: "editor", id: "editor" });
  const main = h("div", { class: "grow" }, h("div", { class: "toolbar" }, title, saveButton), conflict, status, editorHost);
  replace(root, side, main);

  // Drag and drop onto the tree uploads into the workspace root.
  tree.addEventListener("dragover", (event) => {
    event.preventDefault();
    tree.classList.add("drop");
  });
  tree.addEventListener("dragleave", () => tree.classList.remove("drop"));
  tree.addEventListener("drop", (event) => {
    event.preventDefault();
    tree.classList.remove("drop");
    uploadFiles([...(event.dataTransfer?.files || [])]);
  });

  /** @param {string} dir */
  async function load(dir) {
    try {
      const listing = await call("GET", "/api/v1/files", { query: { path: dir } });
      listings.set(dir, listing.entries);
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        listings.delete(dir);
        expanded.delete(dir);
      } else notice(status, describe(error), "error");
    }
  }

  /** A folder that is gone (or moved): closed, with everything below it. @param {string} path */
  function forget(path) {
    for (const dir of [...expanded]) {
      if (dir === path || dir.startsWith(`${path}/`)) {
        expanded.delete(dir);
        listings.delete(dir);
      }
    }
  }

  async function reloadAll() {
    await Promise.all([...expanded].map(load));
    render();
  }

  function render() {
    replace(tree, branch(""));
  }

  /** @param {string} dir @returns {HTMLUListElement} */
  function branch(dir) {
    const list = h("ul", { role: dir ? "group" : undefined });
    for (const entry of listings.get(dir) || []) {
      const isDir = entry.type === "directory";
      const open = expanded.has(entry.path);
      const label = h(
        "button",
        {
          class: `name${current && current.path === entry.path ? " active" : ""}`,
          title: entry.path,
          dataset: { path: entry.path },
          onclick: () => (isDir ? toggle(entry.path) : openFile(entry.path)),
        },
        `${isDir ? (open ? "▾ " : "▸ ") : "  "}${entry.name}`,
      );
      const item = h(
        "li",
        { role: "treeitem", "aria-expanded": isDir ? String(open) : undefined },
        h(
          "div",
          { class: "row" },
          label,
          h("span", { class: "muted" }, isDir ? "" : size(entry.size)),
          h("button", { class: "act", title: `Rename ${entry.name}`, onclick: () => rename(entry.path) }, "✎"),
          h("button", { class: "act", title: `Delete ${entry.name}`, onclick: () => remove(entry) }, "✕"),
        ),
        isDir && open ? branch(entry.path) : null,
      );
      list.append(item);
    }
    return list;
  }

  /** @param {string} dir */
  async function toggle(dir) {
    if (expanded.has(dir)) expanded.delete(dir);
    else {
      expanded.add(dir);
      await load(dir);
    }
    render();
  }

  /** @param {string} path */
  async function openFile(path) {
    if (current && current.dirty && current.path !== path && !confirm(`Discard your edits to ${current.path}?`)) return;
    await open(path);
  }

  /** @param {string} path */
  async function open(path) {
    conflict.hidden = true;
    notice(status, "");
    let file;
    try {
      file = await call("GET", filePath(path), { query: { format: "json" } });
    } catch (error) {
      notice(status, describe(error), "error");
      return;
    }
    title.textContent = path;
    if (file.encoding !== "utf-8") {
      current?.editor?.destroy();
      current = null;
      saveButton.disabled = true;
      replace(editorHost, h("p", { class: "notice" }, `Binary file (${size(file.size)}): not shown.`));
      render();
      return;
    }
    loading = true;
    if (current && current.path === path && current.editor) {
      current.editor.setText(file.content);
      current.etag = file.etag;
    } else {
      current?.editor?.destroy();
      replace(editorHost);
      current = { path, etag: file.etag, dirty: false, editor: null };
      const mine = current;
      const editor = await createEditor(editorHost, path, file.content, {
        onChange: () => {
          if (loading || current !== mine) return;
          mine.dirty = true;
          saveButton.disabled = false;
          title.textContent = `${mine.path} ●`;
        },
        onSave: () => save(false),
      });
      mine.editor = editor;
    }
    loading = false;
    current.dirty = false;
    saveButton.disabled = true;
    render();
  }

  /** @param {boolean} overwrite without If-Match: replace whatever is on disk now */
  async function save(overwrite) {
    if (!current || !current.editor) return;
    const file = current;
    /** @type {Record<string, string>} */
    const headers = { "Content-Type": "text/plain; charset=utf-8" };
    if (!overwrite) headers["If-Match"] = file.etag;
    try {
      const written = await call("PUT", filePath(file.path), { body: file.editor?.getText() || "", headers });
      file.etag = written.etag;
      file.dirty = false;
      saveButton.disabled = true;
      conflict.hidden = true;
      title.textContent = file.path;
      notice(status, `Saved ${file.path} (${size(written.size)})`);
    } catch (error) {
      if (error instanceof ApiError && error.status === 412) {
        conflict.hidden = false;
        notice(status, "Not saved: someone else changed the file.", "error");
      } else notice(status, describe(error), "error");
    }
  }

  /** @param {"file" | "folder"} kind */
  async function create(kind) {
    const path = prompt(kind === "file" ? "New file (path in the workspace)" : "New folder (path in the workspace)");
    if (!path) return;
    try {
      if (kind === "folder") await call("POST", "/api/v1/files/mkdir", { json: { path } });
      else await request("PUT", filePath(path), { body: "", headers: { "If-None-Match": "*" } });
      expanded.add(parentOf(path));
      await reloadAll();
      if (kind === "file") await open(path);
    } catch (error) {
      notice(status, describe(error), "error");
    }
  }

  /** @param {string} path */
  async function rename(path) {
    const to = prompt(`Rename or move ${path} to`, path);
    if (!to || to === path) return;
    // Taken before the move: its `deleted` event may come (and close these) before the answer does.
    const opened = [...expanded].filter((dir) => dir === path || dir.startsWith(`${path}/`));
    try {
      await call("POST", "/api/v1/files/move", { json: { from: path, to } });
      if (current && (current.path === path || current.path.startsWith(`${path}/`))) {
        current.path = to + current.path.slice(path.length); // the file itself, or a folder around it
        title.textContent = current.dirty ? `${current.path} ●` : current.path;
      }
      for (const dir of opened) {
        forget(dir);
        expanded.add(to + dir.slice(path.length)); // the renamed folder stays open where it went
      }
      expanded.add(parentOf(to));
      await reloadAll();
    } catch (error) {
      notice(status, describe(error), "error");
    }
  }

  /** @param {FileEntry} entry */
  async function remove(entry) {
    if (!confirm(`Delete ${entry.path}?`)) return;
    try {
      await request("DELETE", filePath(entry.path), { query: { recursive: entry.type === "directory" ? "true" : null } });
      forget(entry.path);
      if (current && current.path === entry.path) {
        current.editor?.destroy();
        current = null;
        replace(editorHost);
        title.textContent = "No file open";
        saveButton.disabled = true;
      }
      await reloadAll();
    } catch (error) {
      notice(status, describe(error), "error");
    }
  }

  /** @param {File[]} files */
  async function uploadFiles(files) {
    if (!files.length) return;
    const onProgress = (/** @type {number} */ fraction) => (progress.style.width = `${Math.round(fraction * 100)}%`);
    try {
      let result;
      try {
        result = await upload("", files, onProgress);
      } catch (error) {
        // Nothing was kept (the upload is all or nothing): ask before replacing what is there.
        if (!(error instanceof ApiError && error.code === "already_exists")) throw error;
        const existing = error.details.path || "A file";
        if (!confirm(`${existing} already exists. Replace it, and any other existing file in this upload?`)) {
          notice(status, `Not uploaded: ${existing} already exists.`, "error");
          return;
        }
        result = await upload("", files, onProgress, true);
      }
      notice(status, `Uploaded ${result.uploaded.map((u) => u.path).join(", ")}`);
    } catch (error) {
      notice(status, describe(error), "error");
    } finally {
      progress.style.width = "0";
      picker.value = "";
    }
    await reloadAll();
  }

  async function runSearch() {
    const q = search.value.trim();
    replace(results);
    if (!q) return;
    try {
      const found = await call("GET", "/api/v1/search", { query: { q, limit: 100 } });
      for (const match of found.matches) {
        results.append(
          h(
            "li",
            {},
            h("button", { class: "name", onclick: () => openFile(match.path) }, `${match.path}:${match.line ?? ""}`),
            h("code", { class: "muted" }, match.text || ""),
          ),
        );
      }
      if (!found.matches.length) results.append(h("li", { class: "muted" }, "No match"));
    } catch (error) {
      notice(status, describe(error), "error");
    }
  }

  // Live: reload the listings the changes touch (coalesced per animation frame), and the open file
  // when it changed on disk and has no edits.
  /** @type {Set<string>} */
  const dirty = new Set();
  let scheduled = false;
  events.on("file_changed", (event) => {
    const dir = parentOf(event.path);
    if (event.event_type === "deleted") forget(event.path); // not listed again: it is gone
    if (expanded.has(dir)) dirty.add(dir);
    // A change to the open file, or its replacement (a tool's rename over it is `created`): show it.
    const replaced = event.event_type === "modified" || event.event_type === "created";
    if (current && current.path === event.path && replaced && !current.dirty) dirty.add("\0open");
    if (scheduled) return;
    scheduled = true;
    setTimeout(async () => {
      scheduled = false;
      const dirs = [...dirty];
      dirty.clear();
      await Promise.all(dirs.filter((d) => d !== "\0open" && (d === "" || expanded.has(d))).map(load));
      render();
      if (dirs.includes("\0open") && current && !current.dirty) await refreshOpen();
    }, 50);
  });
  events.on("resync", () => reloadAll());

  async function refreshOpen() {
    if (!current) return;
    const response = await request("GET", filePath(current.path), { query: { format: "json" } }).catch(() => null);
    if (!response || !current || current.dirty) return;
    const file = await response.json();
    if (file.etag !== current.etag && file.encoding === "utf-8" && current.editor) {
      loading = true;
      current.editor.setText(file.content);
      loading = false;
      current.etag = file.etag;
    }
  }

  reloadAll();
  return { shown: () => {}, open };
}
