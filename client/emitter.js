// A minimal event emitter: `on` returns an unsubscribe function; a throwing handler never
// stops the others (its error is reported through the `error` event or the console).

export class Emitter {
  constructor() {
    /** @type {Map<string, Set<Function>>} */
    this._handlers = new Map();
  }

  /** Calls `handler` for every `name` until the returned function is called. */
  on(name, handler) {
    if (typeof handler !== 'function') throw new TypeError(`on(${JSON.stringify(name)}, handler): handler must be a function`);
    let set = this._handlers.get(name);
    if (!set) this._handlers.set(name, (set = new Set()));
    set.add(handler);
    return () => this.off(name, handler);
  }

  /** Calls `handler` for the next `name` only. */
  once(name, handler) {
    const off = this.on(name, (...args) => {
      off();
      handler(...args);
    });
    return off;
  }

  off(name, handler) {
    const set = this._handlers.get(name);
    if (set) {
      set.delete(handler);
      if (set.size === 0) this._handlers.delete(name);
    }
  }

  /** True when someone listens to `name`. */
  listens(name) {
    return this._handlers.has(name);
  }

  emit(name, ...args) {
    const set = this._handlers.get(name);
    if (!set) return;
    for (const h of [...set]) {
      try {
        h(...args);
      } catch (err) {
        if (name !== 'error' && this._handlers.has('error')) this.emit('error', { code: 'handler_failed', message: `a ${name} handler threw: ${err && err.message}`, cause: err });
        else console.error(`rowcast: a ${name} handler threw`, err);
      }
    }
  }
}
