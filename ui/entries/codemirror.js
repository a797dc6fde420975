// The editor's one ES module: CodeMirror 6 and the languages the console highlights.
// Bundled by tools/vendor_ui.py (esbuild, pinned in ui/package.json) into
// wsruntime_ext/ui_assets/vendor/codemirror.js; the console imports it only when a file is opened.
export { basicSetup, EditorView } from "codemirror";
export { EditorState, Compartment } from "@codemirror/state";
export { keymap } from "@codemirror/view";
export { indentWithTab } from "@codemirror/commands";
export { javascript } from "@codemirror/lang-javascript";
export { python } from "@codemirror/lang-python";
export { json } from "@codemirror/lang-json";
export { oneDark } from "@codemirror/theme-one-dark";
