// A js-libp2p circuit relay v2 server (@libp2p/circuit-relay-v2's circuitRelayServer over
// @chainsafe/libp2p-quic), the baseline of quicpeer's relay in the slot scenario
// (`compare slots`). It prints one JSON object on stdout once it listens:
//
//   {"event":"listening","peer_id":"12D3...","addrs":["/ip4/127.0.0.1/udp/P/quic-v1/p2p/12D3..."]}
//
// Usage: node relay-server.mjs --seed N [--port 0]
// Its limits are js-libp2p's defaults (a reservation is kept per PeerId: a client that
// reserves again replaces its own). It stops when its stdin closes.

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
const { circuitRelayServer } = await import('@libp2p/circuit-relay-v2')
const { generateKeyPairFromSeed } = await import('@libp2p/crypto/keys')

process.stdout.on('error', () => process.exit(0))

const args = process.argv.slice(2)
const opts = { seed: 1, port: 0 }
for (let i = 0; i < args.length; i += 2) {
  switch (args[i]) {
    case '--seed': opts.seed = Number(args[i + 1]); break
    case '--port': opts.port = Number(args[i + 1]); break
    default: throw new Error(`unknown option ${args[i]}`)
  }
}

const privateKey = await generateKeyPairFromSeed('Ed25519', new Uint8Array(32).fill(opts.seed))
const node = await createLibp2p({
  privateKey,
  addresses: { listen: [`/ip4/127.0.0.1/udp/${opts.port}/quic-v1`] },
  transports: [quic()],
  services: { ping: ping(), identify: identify(), relay: circuitRelayServer() }
})
await node.start()
process.stdout.write(JSON.stringify({
  event: 'listening',
  peer_id: node.peerId.toString(),
  addrs: node.getMultiaddrs().map((ma) => ma.toString())
}) + '\n')

async function shutdown () {
  await node.stop().catch(() => {})
  process.exit(0)
}
process.on('SIGTERM', shutdown)
process.on('SIGINT', shutdown)
process.stdin.on('end', shutdown)
process.stdin.resume()
