// Building the page: elements whose text is always set with textContent, never parsed as HTML.
// @ts-check

/**
 * @typedef {string | Node | null | undefined | false} Child
 */

/**
 * An element. `attrs` keys starting with "on" are event listeners, `class` and `dataset` as in the DOM,
 * anything else an attribute; children are nodes or text (set as text, never as HTML).
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {Record<string, any>} [attrs]
 * @param {...(Child | Child[])} children
 * @returns {HTMLElementTagNameMap[K]}
 */
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "value") /** @type {any} */ (node).value = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

/** @param {Element} node @param {(Child | Child[])[]} children */
export function append(node, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
}

/** @param {Element} node @param {...(Child | Child[])} children replaces what the node holds */
export function replace(node, ...children) {
  node.replaceChildren();
  append(node, children);
}

/**
 * A message in the panel's notice line (errors in red).
 * @param {Element} line
 * @param {string} text
 * @param {"info" | "error"} [kind]
 */
export function notice(line, text, kind = "info") {
  line.textContent = text;
  line.className = `notice ${kind}`;
}

/** @param {unknown} error @returns {string} */
export function describe(error) {
  if (error && typeof error === "object" && "code" in error && "message" in error) {
    return `${/** @type {any} */ (error).message} (${/** @type {any} */ (error).code})`;
  }
  return String(error);
}

/** @param {number} bytes @returns {string} */
export function size(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1 << 20) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / (1 << 20)).toFixed(1)} MiB`;
}
