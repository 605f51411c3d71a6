// A js-libp2p peer over QUIC (@chainsafe/libp2p-quic) with /ipfs/ping/1.0.0, for quicpeer's
// interop tests. It prints one JSON object per line on stdout:
//
//   {"event":"listening","peer_id":"12D3...","addrs":["/ip4/127.0.0.1/udp/PORT/quic-v1/p2p/12D3..."]}
//   {"event":"connected","peer":"12D3...","addr":"/ip4/...","direction":"inbound"}
//   {"event":"closed","peer":"12D3...","addr":"/ip4/...","direction":"inbound"}
//   {"event":"quic_closed","conn":"139651063019904","reason":"reset by peer"}
//   {"event":"ping","peer":"12D3...","rtt_ms":0.4}
//   {"event":"ping_failed","error":"..."}
//
// `closed` is libp2p's `connection:close`, which carries no reason; `quic_closed` is the QUIC
// layer's own account of why the connection ended: quinn's `ConnectionError` text ("reset by
// peer" for a stateless reset, "timed out" for the idle timeout, "closed by peer: ..." for the
// peer's CONNECTION_CLOSE, "closed" for our own).
//
// Usage:
//   node peer.mjs listen --seed N [--host 127.0.0.1] [--port 0]
//   node peer.mjs dial --seed N --addr /ip4/127.0.0.1/udp/P/quic-v1/p2p/12D3... [--ping-interval-ms 200]
//
// The identity is the Ed25519 key whose 32-byte seed is the byte N repeated (as quicpeer's and
// the Rust peer's `--seed`). In dial mode the peer pings the address every interval; a ping
// with no connection dials a fresh one, so the dialer reconnects by itself after a loss.

// Node 20 lacks Promise.withResolvers (ES2024), which libp2p 2.x uses.
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function withResolvers () {
    let resolve
    let reject
    const promise = new this((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}

const { createLibp2p } = await import('libp2p')
const { quic } = await import('@chainsafe/libp2p-quic')
const { ping } = await import('@libp2p/ping')
const { generateKeyPairFromSeed } = await import('@libp2p/crypto/keys')
const { multiaddr } = await import('@multiformats/multiaddr')

// Whoever reads our stdout is gone: so is our purpose.
process.stdout.on('error', () => process.exit(0))

function emit (event, fields = {}) {
  process.stdout.write(JSON.stringify({ event, ...fields }) + '\n')
}

function parseArgs (argv) {
  const [mode, ...rest] = argv
  const opts = { mode, seed: 1, host: '127.0.0.1', port: 0, addr: null, pingIntervalMs: 200 }
  for (let i = 0; i < rest.length; i += 2) {
    const [key, value] = [rest[i], rest[i + 1]]
    if (value === undefined) throw new Error(`missing value for ${key}`)
    switch (key) {
      case '--seed': opts.seed = Number(value); break
      case '--host': opts.host = value; break
      case '--port': opts.port = Number(value); break
      case '--addr': opts.addr = value; break
      case '--ping-interval-ms': opts.pingIntervalMs = Number(value); break
      default: throw new Error(`unknown option ${key}`)
    }
  }
  if (mode !== 'listen' && mode !== 'dial') throw new Error('mode must be listen or dial')
  if (!Number.isInteger(opts.seed) || opts.seed < 0 || opts.seed > 255) throw new Error('--seed must be 0..=255')
  if (mode === 'dial' && opts.addr == null) throw new Error('dial needs --addr')
  return opts
}

// libp2p's `connection:close` carries no reason, and the transport's native `closed()`
// resolves without quinn's ConnectionError. On a closed quinn connection, accepting a stream
// fails at once with that error, so asking right after `closed()` resolves recovers it: "reset
// by peer" for a stateless reset, "timed out" for the idle timeout, "closed" for our own close.
async function reportCloseReasons () {
  const transport = import.meta.resolve('@chainsafe/libp2p-quic')
  // Not in the package's exports map: load the very module its transport uses, by file URL.
  const napi = await import(new URL('./napi.js', transport).href)
  const closed = napi.Connection.prototype.closed
  napi.Connection.prototype.closed = async function () {
    await closed.call(this)
    let reason = 'closed'
    try {
      await this.inboundStream()
    } catch (err) {
      reason = String(err?.message ?? err)
    }
    emit('quic_closed', { conn: this.id(), reason })
  }
}

const opts = parseArgs(process.argv.slice(2))
await reportCloseReasons()
const privateKey = await generateKeyPairFromSeed('Ed25519', new Uint8Array(32).fill(opts.seed))
const node = await createLibp2p({
  privateKey,
  addresses: {
    listen: opts.mode === 'listen' ? [`/ip4/${opts.host}/udp/${opts.port}/quic-v1`] : []
  },
  transports: [quic()],
  services: { ping: ping() }
})

const describe = (connection) => ({
  peer: connection.remotePeer.toString(),
  addr: connection.remoteAddr.toString(),
  direction: connection.direction
})
node.addEventListener('connection:open', (e) => emit('connected', describe(e.detail)))
node.addEventListener('connection:close', (e) => emit('closed', describe(e.detail)))

await node.start()
emit('listening', {
  peer_id: node.peerId.toString(),
  addrs: node.getMultiaddrs().map((ma) => ma.toString())
})

let stopping = false
async function shutdown () {
  if (stopping) return
  stopping = true
  await node.stop().catch(() => {})
  process.exit(0)
}
process.on('SIGTERM', shutdown)
process.on('SIGINT', shutdown)
// The test harness owns this process: when it closes our stdin, we go.
process.stdin.on('end', shutdown)
process.stdin.resume()

if (opts.mode === 'dial') {
  const target = multiaddr(opts.addr)
  const peer = target.getPeerId()
  while (!stopping) {
    const started = Date.now()
    try {
      const rtt = await node.services.ping.ping(target, { signal: AbortSignal.timeout(5_000) })
      emit('ping', { peer, rtt_ms: rtt })
    } catch (err) {
      emit('ping_failed', { peer, error: String(err?.message ?? err) })
    }
    const wait = Math.max(0, opts.pingIntervalMs - (Date.now() - started))
    await new Promise((resolve) => setTimeout(resolve, wait))
  }
}
