// Agent text as markdown: marked renders, DOMPurify sanitises. Bundled by tools/vendor_ui.py
// into wsruntime_ext/ui_assets/vendor/markdown.js.
export { Marked } from "marked";
export { default as DOMPurify } from "dompurify";
