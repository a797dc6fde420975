// WS /api/v1/ws fanned out to the panels: one socket for the page, resumed with `?after=`
// after a dropped connection; a `resync` (events were lost) tells every panel to reload.
// @ts-check

import { Stream } from "./api.js";

/** @typedef {import("./wsruntime").components["schemas"]} Schemas */
/** @typedef {"connecting" | "open" | "closed"} ConnectionState */

/** @type {Map<string, Set<(event: any) => void>>} */
const listeners = new Map();
/** @type {Set<(state: ConnectionState) => void>} */
const stateListeners = new Set();
let lastSeq = /** @type {number | null} */ (null);
let started = false;
/** @type {ConnectionState} */
let state = "connecting";

/**
 * Listen to one event type (`file_changed`, `system_stats`, `git_changed`, `script_run`, `process`,
 * `agent_session`, `git_progress`, `resync`, `hello`).
 * @param {string} type
 * @param {(event: any) => void} handler
 * @returns {() => void} stops listening
 */
export function on(type, handler) {
  let set = listeners.get(type);
  if (!set) listeners.set(type, (set = new Set()));
  set.add(handler);
  return () => set.delete(handler);
}

/** @param {(state: ConnectionState) => void} handler @returns {ConnectionState} the state now */
export function onConnection(handler) {
  stateListeners.add(handler);
  return state;
}

/** @param {string} type @param {any} event */
function emit(type, event) {
  for (const handler of listeners.get(type) || []) {
    try {
      handler(event);
    } catch (error) {
      console.error(error);
    }
  }
}

/** Open the events socket (once). */
export function start() {
  if (started) return;
  started = true;
  new Stream("/api/v1/ws", {
    query: () => (lastSeq === null ? {} : { after: lastSeq }),
    onState: (next) => {
      state = next;
      for (const handler of stateListeners) handler(next);
    },
    reconnectOn: () => true,
    onMessage: (event) => {
      if (typeof event.seq === "number") lastSeq = event.seq;
      emit(event.type, event);
    },
  });
}
