// The one API client every panel uses: fetch with the token, the JSON error shape turned into
// one error type, and WebSockets that reconnect with back-off and resume with `?after=`.
// Panels never call fetch or new WebSocket themselves.
// @ts-check

/** @typedef {import("./wsruntime").components["schemas"]} Schemas */

const TOKEN_KEY = "wsruntime.token";

/** An API error: `{"error": {"code", "message", "details"}}` with its HTTP status. */
export class ApiError extends Error {
  /**
   * @param {number} status
   * @param {string} code
   * @param {string} message
   * @param {Record<string, unknown>} [details]
   */
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details || {};
  }
}

/** @returns {string} the token kept for this tab ("" when none) */
export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

/** @param {string} token */
export function setToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** @type {(() => Promise<void>) | null} */
let onUnauthorized = null;

/** @param {() => Promise<void>} handler asks the person for a token after a 401 */
export function setUnauthorizedHandler(handler) {
  onUnauthorized = handler;
}

/**
 * @param {string} path
 * @param {Record<string, string | number | boolean | null | undefined>} [query]
 * @returns {string}
 */
export function url(path, query) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null) params.set(key, String(value));
  }
  const text = params.toString();
  return text ? `${path}?${text}` : path;
}

/**
 * One request; the raw Response when it succeeded, an ApiError otherwise.
 * @param {string} method
 * @param {string} path
 * @param {{query?: Record<string, string | number | boolean | null | undefined>, json?: unknown,
 *   body?: BodyInit, headers?: Record<string, string>}} [options]
 * @returns {Promise<Response>}
 */
export async function request(method, path, options = {}) {
  for (let attempt = 0; ; attempt++) {
    /** @type {Record<string, string>} */
    const headers = { ...(options.headers || {}) };
    const token = getToken();
    if (token) headers.Authorization = `Bearer ${token}`;
    let body = options.body;
    if (options.json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(options.json);
    }
    const response = await fetch(url(path, options.query), { method, headers, body });
    if (response.ok || response.status === 304) return response;
    if (response.status === 401 && attempt === 0 && onUnauthorized) {
      await onUnauthorized();
      continue;
    }
    throw await toError(response);
  }
}

/**
 * @param {Response} response
 * @returns {Promise<ApiError>}
 */
async function toError(response) {
  try {
    const body = await response.json();
    const error = body && body.error;
    if (error && typeof error.code === "string") {
      return new ApiError(response.status, error.code, String(error.message), error.details);
    }
  } catch {
    // not JSON: fall through
  }
  return new ApiError(response.status, "http_error", `${response.status} ${response.statusText}`);
}

/**
 * A request whose answer is JSON (null for 204).
 * @param {string} method
 * @param {string} path
 * @param {{query?: Record<string, string | number | boolean | null | undefined>, json?: unknown,
 *   body?: BodyInit, headers?: Record<string, string>}} [options]
 * @returns {Promise<any>}
 */
export async function call(method, path, options) {
  const response = await request(method, path, options);
  if (response.status === 204) return null;
  return response.json();
}

/** @param {string} path a workspace-relative path @returns {string} its URL path under /api/v1/files/ */
export function filePath(path) {
  return "/api/v1/files/" + path.split("/").map(encodeURIComponent).join("/");
}

/** @type {Promise<Schemas["Health"]> | null} */
let health = null;

/** @returns {Promise<Schemas["Health"]>} /health, asked once */
export function getHealth() {
  if (!health) health = call("GET", "/health");
  return health;
}

/** @returns {Promise<string>} the path prefix of the workspace's git and OpenSpec routes */
export async function workspacePath() {
  const info = await getHealth();
  return `/api/v1/workspaces/${encodeURIComponent(info.workspace_id)}`;
}

/**
 * Upload files with progress (fetch cannot report upload progress; XMLHttpRequest can).
 * @param {string} dir
 * @param {File[]} files
 * @param {(fraction: number) => void} onProgress
 * @param {boolean} [overwrite] replace existing files (else an existing one is a 409 `already_exists`)
 * @returns {Promise<Schemas["UploadResult"]>}
 */
export function upload(dir, files, onProgress, overwrite = false) {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    for (const file of files) form.append("file", file, file.webkitRelativePath || file.name);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", url("/api/v1/files/upload", { path: dir, overwrite: overwrite ? true : null }));
    const token = getToken();
    if (token) xhr.setRequestHeader("Authorization", `Bearer ${token}`);
    xhr.upload.onprogress = (event) => event.lengthComputable && onProgress(event.loaded / event.total);
    xhr.onload = () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        body = null;
      }
      if (xhr.status === 201) resolve(body);
      else {
        const error = (body && body.error) || { code: "http_error", message: `${xhr.status}` };
        reject(new ApiError(xhr.status, error.code, error.message, error.details));
      }
    };
    xhr.onerror = () => reject(new ApiError(0, "network_error", "The upload could not reach the runtime"));
    xhr.send(form);
  });
}

/**
 * @typedef {object} StreamOptions
 * @property {(data: any, binary: boolean) => void} onMessage every frame (text frames parsed as JSON)
 * @property {() => Record<string, string | number | null | undefined>} [query] asked before every (re)connect:
 *   where to resume (`after`)
 * @property {(state: "connecting" | "open" | "closed") => void} [onState]
 * @property {(code: number) => boolean} [reconnectOn] whether a close with this code should reconnect
 *   (default: anything but 1000, a 4xx handshake refusal, or close())
 */

/** A WebSocket that reconnects with back-off and resumes where it left off. */
export class Stream {
  /**
   * @param {string} path
   * @param {StreamOptions} options
   */
  constructor(path, options) {
    this.path = path;
    this.options = options;
    /** @type {WebSocket | null} */
    this.socket = null;
    this.closed = false;
    this.delay = 250;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.timer = null;
    this.connect();
  }

  connect() {
    if (this.closed) return;
    const query = { ...(this.options.query ? this.options.query() : {}) };
    const token = getToken();
    if (token) query.token = token;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(`${scheme}//${location.host}${url(this.path, query)}`);
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    this.options.onState?.("connecting");
    socket.onopen = () => {
      this.delay = 250;
      this.options.onState?.("open");
    };
    socket.onmessage = (event) => {
      if (typeof event.data === "string") this.options.onMessage(JSON.parse(event.data), false);
      else this.options.onMessage(event.data, true);
    };
    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.options.onState?.("closed");
      const again = this.options.reconnectOn ? this.options.reconnectOn(event.code) : event.code !== 1000;
      if (!this.closed && again) {
        this.timer = setTimeout(() => this.connect(), this.delay);
        this.delay = Math.min(this.delay * 2, 5000);
      }
    };
  }

  /** @param {unknown} frame sent as JSON (binary when an ArrayBuffer or Uint8Array) @returns {boolean} */
  send(frame) {
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN) return false;
    if (frame instanceof ArrayBuffer || frame instanceof Uint8Array) this.socket.send(frame);
    else this.socket.send(JSON.stringify(frame));
    return true;
  }

  close() {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    const socket = this.socket;
    this.socket = null;
    socket?.close(1000);
  }
}
