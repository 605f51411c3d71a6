// A js-libp2p circuit relay v2 client (@libp2p/circuit-relay-v2 over @chainsafe/libp2p-quic,
// noise and yamux on the relayed connections, identify and ping), for quicpeer's relay interop
// test. It prints one JSON object per line on stdout:
//
//   {"event":"reserved","addrs":["/ip4/127.0.0.1/udp/P/quic-v1/p2p/RELAY/p2p-circuit/p2p/ME"]}
//   {"event":"connected","peer":"12D3...","addr":"...","relayed":true}
//   {"event":"identified","peer":"12D3..."}
//   {"event":"ping","peer":"12D3...","rtt_ms":0.4}
//   {"event":"ping_failed","peer":"12D3...","error":"..."}
//   {"event":"error","error":"..."}      (a refused reservation: the relay's status is in it)
//
// Usage:
//   node relay-client.mjs listen --seed N --relay /ip4/127.0.0.1/udp/P/quic-v1/p2p/RELAY
//   node relay-client.mjs dial --seed N --addr /ip4/.../p2p/RELAY/p2p-circuit/p2p/TARGET
//
// `listen` reserves on the relay and listens on its circuit address; it pings every peer that
// reaches it through the relay. `dial` dials the address through the relay and pings it. Both
// ping every 200 ms, on the relayed connection itself. The identity is the Ed25519 key whose seed is the byte N repeated.

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
const { identify } = await import('@libp2p/identify')
const { noise } = await import('@chainsafe/libp2p-noise')
const { yamux } = await import('@chainsafe/libp2p-yamux')
const { circuitRelayTransport } = await import('@libp2p/circuit-relay-v2')
const { generateKeyPairFromSeed } = await import('@libp2p/crypto/keys')
const { multiaddr } = await import('@multiformats/multiaddr')

process.stdout.on('error', () => process.exit(0))

function emit (event, fields = {}) {
  process.stdout.write(JSON.stringify({ event, ...fields }) + '\n')
}

const [mode, ...rest] = process.argv.slice(2)
const opts = { seed: 1, relay: null, addr: null }
for (let i = 0; i < rest.length; i += 2) {
  const [key, value] = [rest[i], rest[i + 1]]
  switch (key) {
    case '--seed': opts.seed = Number(value); break
    case '--relay': opts.relay = value; break
    case '--addr': opts.addr = value; break
    default: throw new Error(`unknown option ${key}`)
  }
}
if (mode === 'listen' && opts.relay == null) throw new Error('listen needs --relay')
if (mode === 'dial' && opts.addr == null) throw new Error('dial needs --addr')

const privateKey = await generateKeyPairFromSeed('Ed25519', new Uint8Array(32).fill(opts.seed))
const node = await createLibp2p({
  // Started below, where a refused reservation is caught.
  start: false,
  privateKey,
  addresses: { listen: mode === 'listen' ? [`${opts.relay}/p2p-circuit`] : [] },
  transports: [quic(), circuitRelayTransport()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  services: { ping: ping(), identify: identify() }
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
process.stdin.on('end', shutdown)
process.stdin.resume()

// One /ipfs/ping/1.0.0 round trip on the connection itself. (The ping service, given a
// PeerId, looks for a connection without limits, finds none on a relayed one, and dials.)
async function pingOnce (connection) {
  const stream = await connection.newStream('/ipfs/ping/1.0.0', {
    runOnLimitedConnection: true,
    signal: AbortSignal.timeout(5_000)
  })
  const payload = crypto.getRandomValues(new Uint8Array(32))
  const started = performance.now()
  const echo = (async () => {
    const got = []
    let length = 0
    for await (const chunk of stream.source) {
      const bytes = chunk.subarray()
      got.push(bytes)
      length += bytes.length
      if (length >= 32) break
    }
    return Buffer.concat(got)
  })()
  await stream.sink([payload])
  const answer = await echo
  const rtt = performance.now() - started
  await stream.close().catch(() => {})
  if (!Buffer.from(payload).equals(answer.subarray(0, 32))) throw new Error('wrong echo')
  return rtt
}

async function pingLoop (connection) {
  const peer = connection.remotePeer.toString()
  while (!stopping && connection.status === 'open') {
    try {
      emit('ping', { peer, rtt_ms: await pingOnce(connection) })
    } catch (err) {
      emit('ping_failed', { peer, error: String(err?.message ?? err) })
    }
    await new Promise((resolve) => setTimeout(resolve, 200))
  }
}

const pinging = new Set()
node.addEventListener('connection:open', (e) => {
  const connection = e.detail
  const relayed = connection.remoteAddr.toString().includes('/p2p-circuit')
  const peer = connection.remotePeer.toString()
  emit('connected', { peer, addr: connection.remoteAddr.toString(), relayed })
  if (mode === 'listen' && relayed && !pinging.has(peer)) {
    pinging.add(peer)
    pingLoop(connection)
  }
})
node.addEventListener('peer:identify', (e) => emit('identified', { peer: e.detail.peerId.toString() }))

try {
  await node.start()
} catch (err) {
  // A refused reservation fails the circuit listen address, and so the start; the message
  // names the relay's status ("reservation failed with status RESOURCE_LIMIT_EXCEEDED").
  // Exit once the line is out: a pipe's writes are asynchronous.
  const line = JSON.stringify({ event: 'error', error: String(err?.message ?? err) }) + '\n'
  process.stdout.write(line, () => process.exit(1))
  await new Promise(() => {})
}

if (mode === 'listen') {
  const deadline = Date.now() + 60_000
  for (;;) {
    const addrs = node.getMultiaddrs().map((ma) => ma.toString()).filter((a) => a.includes('/p2p-circuit'))
    if (addrs.length > 0) {
      emit('reserved', { addrs })
      break
    }
    if (Date.now() > deadline) {
      emit('error', { error: 'no reservation within 60 s' })
      break
    }
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
} else {
  const target = multiaddr(opts.addr)
  try {
    const connection = await node.dial(target, { signal: AbortSignal.timeout(30_000) })
    await pingLoop(connection)
  } catch (err) {
    emit('error', { error: String(err?.message ?? err) })
  }
}
