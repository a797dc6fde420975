// The file editor: CodeMirror 6 (vendor/codemirror.js, one ES module), imported only when a file is opened.
// @ts-check

/**
 * @typedef {object} Editor
 * @property {() => string} getText
 * @property {(text: string) => void} setText replaces the document (not an edit to undo)
 * @property {() => void} focus
 * @property {() => void} destroy
 */

// A specifier in a variable: tsc leaves the minified vendored module alone (it is typed `any` here).
const VENDORED = "./vendor/codemirror.js";

/** @param {string} path @param {any} cm @returns {any[]} the language extension for a file name */
function language(path, cm) {
  if (/\.(m?js|cjs|jsx|ts|tsx)$/.test(path)) return [cm.javascript({ typescript: /\.tsx?$/.test(path), jsx: /x$/.test(path) })];
  if (/\.py$/.test(path)) return [cm.python()];
  if (/\.json$/.test(path)) return [cm.json()];
  return [];
}

/**
 * An editor in `parent` showing `text`.
 * @param {HTMLElement} parent
 * @param {string} path
 * @param {string} text
 * @param {{onChange: () => void, onSave: () => void}} handlers
 * @returns {Promise<Editor>}
 */
export async function createEditor(parent, path, text, handlers) {
  const cm = await import(VENDORED);
  const view = new cm.EditorView({
    parent,
    state: cm.EditorState.create({
      doc: text,
      extensions: [
        cm.basicSetup,
        cm.keymap.of([
          cm.indentWithTab,
          { key: "Mod-s", preventDefault: true, run: () => (handlers.onSave(), true) },
        ]),
        ...language(path, cm),
        cm.EditorView.updateListener.of((/** @type {any} */ update) => update.docChanged && handlers.onChange()),
        cm.oneDark, // syntax colours for a dark background (the defaults are for a light one)
        cm.EditorView.theme({ "&": { height: "100%", backgroundColor: "#1b1c20", color: "#dcdfe4" },
          ".cm-gutters": { backgroundColor: "#202226", color: "#6b7078", border: "none" },
          ".cm-content": { caretColor: "#fff" }, "&.cm-focused .cm-cursor": { borderLeftColor: "#fff" },
          ".cm-activeLine": { backgroundColor: "#ffffff08" }, ".cm-activeLineGutter": { backgroundColor: "#ffffff10" } },
          { dark: true }),
      ],
    }),
  });
  return {
    getText: () => view.state.doc.toString(),
    setText: (next) => view.dispatch({ changes: { from: 0, to: view.state.doc.length, insert: next } }),
    focus: () => view.focus(),
    destroy: () => view.destroy(),
  };
}
