# A py-libp2p peer over QUIC (libp2p.transport.quic, on aioquic) with /ipfs/ping/1.0.0, for
# quicpeer's interop tests. It prints one JSON object per line on stdout:
#
#   {"event":"listening","peer_id":"12D3...","addrs":["/ip4/127.0.0.1/udp/PORT/quic-v1/p2p/12D3..."]}
#   {"event":"connected","peer":"12D3...","addr":"/ip4/...","direction":"inbound"}
#   {"event":"closed","peer":"12D3...","addr":"/ip4/...","direction":"inbound"}
#   {"event":"quic_closed","conn":"139651063019904","reason":"Idle timeout (error code 0x0)"}
#   {"event":"ping","peer":"12D3...","rtt_ms":0.4}
#   {"event":"ping_failed","peer":"12D3...","error":"..."}
#   {"event":"listen_failed","error":"..."}
#
# `closed` is the swarm's `disconnected` notification, which carries no reason; `quic_closed`
# is aioquic's own account of why the connection ended (its ConnectionTerminated event: the
# peer's CONNECTION_CLOSE, "Idle timeout", ...).
#
# Usage:
#   python peer.py listen --seed N [--host 127.0.0.1] [--port 0] [--ping-interval-ms 200]
#   python peer.py dial --seed N --addr /ip4/127.0.0.1/udp/P/quic-v1/p2p/12D3... [--ping-interval-ms 200]
#
# The identity is the Ed25519 key whose 32-byte seed is the byte N repeated (as quicpeer's and
# the Rust and js peers' `--seed`). Both modes ping every connected peer every interval over one
# ping stream per peer, using py-libp2p's own ping round trip; a failed ping (no answer within
# --ping-timeout-ms) resets that stream. In dial mode a ping with no connection dials a fresh
# one, so the dialer reconnects by itself after a loss. The peer exits when its stdin closes.
#
# py-libp2p's QUIC listener binds with SO_REUSEPORT: a second listener on a port in use starts
# without an error (and the kernel splits the datagrams between the two), so `listen_failed`
# is printed only when py-libp2p reports no address at all.

import argparse
import json
import logging
import os
import sys
import threading
import time


def emit(event, **fields):
    try:
        sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
        sys.stdout.flush()
    except (BrokenPipeError, OSError):
        # Whoever reads our stdout is gone: so is our purpose.
        os._exit(0)


def parse_args(argv):
    parser = argparse.ArgumentParser(description="A py-libp2p QUIC + ping peer printing JSON lines")
    modes = parser.add_subparsers(dest="mode", required=True)
    for mode in ("listen", "dial"):
        sub = modes.add_parser(mode)
        sub.add_argument(
            "--seed", type=int, default=1, help="the Ed25519 secret is this byte repeated 32 times"
        )
        sub.add_argument("--ping-interval-ms", type=int, default=200)
        sub.add_argument("--ping-timeout-ms", type=int, default=5000)
        if mode == "listen":
            sub.add_argument("--host", default="127.0.0.1")
            sub.add_argument("--port", type=int, default=0)
        else:
            sub.add_argument("--addr", required=True, help="/ip4/.../udp/P/quic-v1/p2p/<id>")
    opts = parser.parse_args(argv)
    if not 0 <= opts.seed <= 255:
        parser.error("--seed must be 0..=255")
    return opts


def exit_soon(after_s):
    # py-libp2p's shutdown may wait on its own timeouts: never let it keep us alive.
    timer = threading.Timer(after_s, lambda: os._exit(0))
    timer.daemon = True
    timer.start()


opts = parse_args(sys.argv[1:])
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

import multiaddr  # noqa: E402
import trio  # noqa: E402

from libp2p import new_host  # noqa: E402
from libp2p.abc import INotifee  # noqa: E402
from libp2p.crypto.ed25519 import create_new_key_pair  # noqa: E402
from libp2p.host.ping import ID as PING, PingService, perform_ping_roundtrip  # noqa: E402
from libp2p.peer.peerinfo import info_from_p2p_addr  # noqa: E402
from libp2p.transport.quic.connection import QUICConnection  # noqa: E402


def report_close_reasons():
    # The swarm's `disconnected` carries no reason. aioquic's ConnectionTerminated does; the
    # QUIC connection handles it in one method, which we wrap to print it first.
    handle = QUICConnection._handle_connection_terminated

    async def wrapped(self, event):
        code = event.error_code
        reason = event.reason_phrase or "no reason"
        emit("quic_closed", conn=str(id(self)), reason=f"{reason} (error code {code:#x})")
        await handle(self, event)

    QUICConnection._handle_connection_terminated = wrapped


def describe(conn):
    muxed = conn.muxed_conn
    addr = ""
    if isinstance(muxed, QUICConnection):
        host, port = muxed.get_remote_address()[:2]
        family = "ip6" if ":" in host else "ip4"
        addr = f"/{family}/{host}/udp/{port}/quic-v1"
    return {
        "peer": str(muxed.peer_id),
        "addr": addr,
        "direction": conn.direction.name.lower(),
    }


class Notifee(INotifee):
    def __init__(self, on_connected):
        self.on_connected = on_connected

    async def opened_stream(self, network, stream):
        pass

    async def closed_stream(self, network, stream):
        pass

    async def connected(self, network, conn):
        fields = describe(conn)
        emit("connected", **fields)
        self.on_connected(conn.muxed_conn.peer_id)

    async def disconnected(self, network, conn):
        emit("closed", **describe(conn))

    async def listen(self, network, maddr):
        pass

    async def listen_close(self, network, maddr):
        pass


class Pinger:
    """Pings one peer every interval over one stream, reopened after a failure."""

    def __init__(self, host, peer_id, dial):
        self.host = host
        self.peer_id = peer_id
        self.dial = dial
        self.stream = None

    def connected(self):
        return bool(self.host.get_network().connections.get(self.peer_id))

    async def reset(self):
        stream, self.stream = self.stream, None
        if stream is not None:
            with trio.move_on_after(0.5):
                try:
                    await stream.reset()
                except Exception:
                    pass

    async def run(self):
        interval = opts.ping_interval_ms / 1000
        while self.dial or self.connected():
            started = time.monotonic()
            try:
                with trio.fail_after(opts.ping_timeout_ms / 1000):
                    if self.stream is None:
                        self.stream = await self.host.new_stream(self.peer_id, [PING])
                    t0 = time.perf_counter()
                    await perform_ping_roundtrip(self.stream)
                    rtt_ms = (time.perf_counter() - t0) * 1000
                emit("ping", peer=str(self.peer_id), rtt_ms=rtt_ms)
            except Exception as err:
                error = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
                emit("ping_failed", peer=str(self.peer_id), error=error)
                await self.reset()
            await trio.sleep(max(0.0, interval - (time.monotonic() - started)))


async def wait_for_stdin_eof():
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    try:
        while await stdin.receive_some(4096):
            pass
    except trio.BrokenResourceError:
        pass


async def main():
    report_close_reasons()
    key_pair = create_new_key_pair(bytes([opts.seed]) * 32)
    listen = (
        [multiaddr.Multiaddr(f"/ip4/{opts.host}/udp/{opts.port}/quic-v1")]
        if opts.mode == "listen"
        else []
    )
    host = new_host(key_pair=key_pair, listen_addrs=listen, enable_quic=True, enable_tcp=False)
    host.set_stream_handler(PING, PingService(host).handle_ping)

    async with trio.open_nursery() as nursery:
        pinging = set()

        def ping_peer(peer_id, dial=False):
            if peer_id in pinging:
                return
            pinging.add(peer_id)

            async def run():
                try:
                    await Pinger(host, peer_id, dial).run()
                finally:
                    pinging.discard(peer_id)

            nursery.start_soon(run)

        if opts.mode == "listen":
            host.get_network().register_notifee(Notifee(ping_peer))
        else:
            host.get_network().register_notifee(Notifee(lambda _: None))

        async def stop_on_stdin_eof():
            await wait_for_stdin_eof()
            exit_soon(2.0)
            nursery.cancel_scope.cancel()

        nursery.start_soon(stop_on_stdin_eof)

        try:
            async with host.run(listen_addrs=listen):
                addrs = [str(a) for a in host.get_addrs()]
                if opts.mode == "listen" and not addrs:
                    emit("listen_failed", error=f"cannot listen on {listen[0]}")
                    os._exit(1)
                emit("listening", peer_id=str(host.get_id()), addrs=addrs)
                if opts.mode == "dial":
                    info = info_from_p2p_addr(multiaddr.Multiaddr(opts.addr))
                    host.get_peerstore().add_addrs(info.peer_id, info.addrs, 24 * 3600)
                    ping_peer(info.peer_id, dial=True)
                await trio.sleep_forever()
        except OSError as err:
            emit("listen_failed", error=str(err))
            os._exit(1)


try:
    trio.run(main)
except KeyboardInterrupt:
    pass
os._exit(0)
