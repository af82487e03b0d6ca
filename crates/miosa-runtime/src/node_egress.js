// Miosa: sends Node's HTTP clients through the sandbox's egress proxy.
//
// Loaded before user code by `NODE_OPTIONS=--require /run/miosa/node-egress.js`
// in sandboxes with egress. Node 18-22 ignore HTTP(S)_PROXY: neither the
// global `fetch` (undici) nor the `http`/`https` default agents use them, and
// a sandbox has no other way out. So this file
//   - replaces `http.globalAgent`/`https.globalAgent` with agents that reach
//     other hosts through the proxy (`CONNECT` tunnels for https, absolute-form
//     requests for http) and `NO_PROXY` hosts directly, and
//   - installs a global undici dispatcher that runs `fetch` on those agents.
// The proxy's CA comes from NODE_EXTRA_CA_CERTS, which Node adds to its
// default trust store. Plain JavaScript, no packages: the sandbox may have no
// registry. It never logs: header values may carry credentials.
'use strict';

(() => {
  const http = require('http');
  const https = require('https');
  const net = require('net');
  const { EventEmitter } = require('events');

  /** The first non-empty variable, lower-case spelling first (as curl). */
  const fromEnv = (...names) => {
    for (const name of names) {
      const value = process.env[name.toLowerCase()] || process.env[name.toUpperCase()];
      if (value) return value.trim();
    }
    return '';
  };

  /** An `http://` proxy URL, or null when unset or not understood. */
  const parseProxy = (value) => {
    if (!value) return null;
    try {
      const url = new URL(value.includes('://') ? value : `http://${value}`);
      if (url.protocol !== 'http:') return null;
      const auth = url.username
        ? 'Basic ' + Buffer.from(
          `${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}`,
        ).toString('base64')
        : null;
      return { host: unbracket(url.hostname), port: Number(url.port) || 80, auth };
    } catch {
      return null;
    }
  };

  const unbracket = (host) => host.replace(/^\[(.*)\]$/, '$1');
  const authority = (host, port) => `${net.isIPv6(host) ? `[${host}]` : host}:${port}`;

  const proxies = {
    'http:': parseProxy(fromEnv('HTTP_PROXY', 'ALL_PROXY')),
    'https:': parseProxy(fromEnv('HTTPS_PROXY', 'ALL_PROXY')),
  };

  // NO_PROXY: `*`, or comma/space separated `host`, `.domain`, `*.domain`,
  // `host:port`; a name matches itself and its subdomains.
  const noProxy = fromEnv('NO_PROXY')
    .split(/[\s,]+/)
    .filter(Boolean)
    .map((entry) => {
      const m = /^(\[[^\]]*\]|[^:]*)(?::(\d+))?$/.exec(entry.toLowerCase());
      if (!m) return null;
      return { host: unbracket(m[1]).replace(/^\*?\./, ''), port: m[2] ? Number(m[2]) : 0 };
    })
    .filter(Boolean);

  /** The proxy for a request to `host:port` over `protocol`, or null. */
  const proxyFor = (protocol, host, port) => {
    const proxy = proxies[protocol];
    if (!proxy || !host) return null;
    const name = unbracket(String(host)).toLowerCase().replace(/\.$/, '');
    const bypass = noProxy.some((e) => (e.host === '*'
      || name === e.host || (!net.isIP(name) && name.endsWith(`.${e.host}`)))
      && (!e.port || e.port === Number(port)));
    return bypass ? null : proxy;
  };

  /** Opens a `CONNECT` tunnel to `host:port`; calls back with the raw socket. */
  const tunnel = (proxy, host, port, callback) => {
    const target = authority(host, port);
    const socket = net.connect({ host: proxy.host, port: proxy.port });
    let head = Buffer.alloc(0);
    const done = (err) => {
      socket.removeListener('readable', onReadable);
      socket.removeListener('error', done);
      socket.removeListener('end', onEnd);
      if (err) socket.destroy();
      callback(err, err ? undefined : socket);
    };
    const onEnd = () => done(new Error(`egress proxy closed the tunnel to ${target}`));
    const onReadable = () => {
      let chunk;
      while ((chunk = socket.read()) !== null) head = Buffer.concat([head, chunk]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) {
        if (head.length > 64 * 1024) done(new Error('egress proxy sent an oversized CONNECT response'));
        return;
      }
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head.toString('latin1', 0, end))?.[1]);
      if (status !== 200) {
        const err = new Error(`egress proxy refused CONNECT ${target}: status ${status || 'unknown'}`);
        err.code = 'ERR_PROXY_CONNECT';
        err.statusCode = status;
        return done(err);
      }
      if (head.length > end + 4) socket.unshift(head.subarray(end + 4));
      done(null);
    };
    socket.on('readable', onReadable);
    socket.on('error', done);
    socket.on('end', onEnd);
    const auth = proxy.auth ? `Proxy-Authorization: ${proxy.auth}\r\n` : '';
    socket.write(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n${auth}\r\n`);
  };

  /** https: a TLS connection inside a `CONNECT` tunnel, per origin (keep-alive pools are per origin). */
  class TunnelAgent extends https.Agent {
    createConnection(options, callback) {
      const proxy = proxyFor('https:', options.host, options.port);
      if (!proxy) return super.createConnection(options);
      tunnel(proxy, unbracket(options.host), options.port || 443, (err, raw) => {
        if (err) return callback(err);
        // Reusing https.Agent's createConnection keeps its TLS session cache.
        callback(null, super.createConnection({ ...options, socket: raw }));
      });
      return undefined;
    }
  }

  /** http: absolute-form requests to the proxy. */
  class ForwardAgent extends http.Agent {
    addRequest(req, options) {
      const proxy = proxyFor('http:', options.host, options.port);
      if (proxy && !/^[a-z]+:\/\//i.test(req.path)) {
        const url = `http://${authority(unbracket(options.host), options.port || 80)}${req.path}`;
        req.path = url;
        if (proxy.auth && !req._header) req.setHeader('Proxy-Authorization', proxy.auth);
        // The request line is already rendered when headers came as an array
        // or with `Expect`: rewrite its target.
        if (req._header) req._header = req._header.replace(/^(\S+) \S+/, `$1 ${url}`);
      }
      super.addRequest(req, options);
    }

    createConnection(options, callback) {
      const proxy = proxyFor('http:', options.host, options.port);
      if (!proxy) return super.createConnection(options, callback);
      return net.connect({ ...options, host: proxy.host, port: proxy.port });
    }
  }

  const agents = {
    'http:': new ForwardAgent({ keepAlive: true }),
    'https:': new TunnelAgent({ keepAlive: true }),
  };

  /** undici's request headers (a string of lines, a flat array, pairs or an object) as an object. */
  const headerObject = (headers) => {
    const out = {};
    const add = (name, value) => {
      if (value == null) return;
      const key = String(name).toLowerCase();
      const values = Array.isArray(value) ? value.map(String) : [String(value)];
      out[key] = key in out ? [].concat(out[key], values) : values.length === 1 ? values[0] : values;
    };
    if (!headers) return out;
    if (typeof headers === 'string') {
      for (const line of headers.split('\r\n')) {
        const colon = line.indexOf(':');
        if (colon > 0) add(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
      }
    } else if (Array.isArray(headers)) {
      if (Array.isArray(headers[0])) for (const [k, v] of headers) add(k, v);
      else for (let i = 0; i + 1 < headers.length; i += 2) add(headers[i], headers[i + 1]);
    } else if (typeof headers[Symbol.iterator] === 'function') {
      for (const [k, v] of headers) add(k, v);
    } else {
      for (const k of Object.keys(headers)) add(k, headers[k]);
    }
    return out;
  };

  const latin1 = (strings) => strings.map((s) => Buffer.from(s, 'latin1'));

  /** Sends a request body: none, bytes/string, or an async iterable (fetch's stream). */
  const sendBody = async (req, body, handler) => {
    if (body == null) return req.end();
    if (typeof body === 'string' || ArrayBuffer.isView(body)) {
      const bytes = typeof body === 'string' ? body : Buffer.from(body.buffer, body.byteOffset, body.byteLength);
      req.end(bytes);
      return handler.onBodySent?.(bytes);
    }
    if (typeof body[Symbol.asyncIterator] !== 'function' && typeof body[Symbol.iterator] !== 'function') {
      throw new TypeError('unsupported request body');
    }
    for await (const chunk of body) {
      if (req.destroyed) return;
      const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
      handler.onBodySent?.(bytes);
      if (!req.write(bytes)) {
        await new Promise((resolve) => {
          req.once('drain', resolve);
          req.once('close', resolve);
        });
      }
    }
    req.end();
  };

  /**
   * The undici Dispatcher that `fetch` uses, on the agents above: the legacy
   * handler protocol (onConnect, onHeaders, onData, onComplete, onError,
   * onUpgrade) that Node 18 (undici 5) and Node 20-22 (undici 6) call.
   */
  class EgressDispatcher extends EventEmitter {
    dispatch(opts, handler) {
      let settled = false;
      let req = null;
      const fail = (err) => {
        if (settled) return;
        settled = true;
        req?.destroy();
        handler.onError(err);
      };
      try {
        const origin = new URL(opts.origin);
        const agent = agents[origin.protocol];
        if (!agent) throw new TypeError(`unsupported protocol ${origin.protocol}`);
        handler.onConnect?.((reason) => fail(reason ?? new Error('request aborted')));
        if (settled) return true;
        const headers = headerObject(opts.headers);
        if (opts.upgrade) Object.assign(headers, { connection: 'upgrade', upgrade: opts.upgrade });
        req = (origin.protocol === 'https:' ? https : http).request({
          protocol: origin.protocol,
          hostname: unbracket(origin.hostname),
          port: origin.port || undefined,
          method: opts.method,
          path: opts.path,
          headers,
          agent,
        });
        req.on('error', fail);
        req.on('upgrade', (res, socket, head) => {
          settled = true;
          if (head?.length) socket.unshift(head);
          handler.onUpgrade?.(res.statusCode, latin1(res.rawHeaders), socket);
        });
        req.on('response', (res) => {
          if (settled) return res.destroy();
          res.on('error', fail);
          res.on('close', () => { if (!res.complete) fail(new Error('response aborted')); });
          res.on('end', () => {
            if (settled) return;
            settled = true;
            handler.onComplete(latin1(res.rawTrailers));
          });
          handler.onResponseStarted?.();
          const resume = () => res.resume();
          const more = handler.onHeaders(res.statusCode, latin1(res.rawHeaders), resume, res.statusMessage);
          if (more === false) res.pause();
          res.on('data', (chunk) => {
            if (!settled && handler.onData(chunk) === false) res.pause();
          });
        });
        sendBody(req, opts.body, handler)
          .then(() => handler.onRequestSent?.())
          .catch(fail);
      } catch (err) {
        // undici reports dispatch errors through the handler, never by throwing.
        queueMicrotask(() => fail(err));
      }
      return true;
    }

    close(callback) {
      return this.destroy(null, callback);
    }

    destroy(err, callback) {
      if (typeof err === 'function') [callback, err] = [err, null];
      for (const agent of Object.values(agents)) agent.destroy();
      if (typeof callback === 'function') return void queueMicrotask(() => callback(null, null));
      return Promise.resolve();
    }
  }

  http.globalAgent = agents['http:'];
  https.globalAgent = agents['https:'];
  // Read by Node's bundled undici (and the undici package) when `fetch` first
  // runs; it keeps a dispatcher someone set before.
  const dispatcherKey = Symbol.for('undici.globalDispatcher.1');
  if (!globalThis[dispatcherKey]) {
    Object.defineProperty(globalThis, dispatcherKey, {
      value: new EgressDispatcher(),
      writable: true,
      enumerable: false,
      configurable: false,
    });
  }
})();
