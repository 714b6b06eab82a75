"""The censoring router's NFQUEUE daemon, run inside the ISP namespace by the lab.

    python -m tests.lab.router READY_FILE

Queue 1 (delay): each packet is held for ``mark >> 16`` milliseconds (the lab's iptables rules
put the one-way delay in the upper half of the packet mark) and then accepted. Packets are kept
in a heap and given their verdict later, which NetfilterQueue >= 1.1 allows.

Queue 2 (dpi_close): the packet (a client->server TCP segment that matched a DPI pattern) is
dropped, and a FIN+ACK is forged from the server to the client with the sequence numbers the
client expects (seq = the client's ACK, ack = the client's seq + payload length, timestamps
echoed), sent through a raw socket, so the client's kernel accepts it and the application sees
EOF. The lab's iptables rules have already CONNMARKed the flow so that the rest of it is dropped.
"""

from __future__ import annotations

import heapq
import itertools
import os
import select
import socket
import struct
import sys
import time

from netfilterqueue import NetfilterQueue

DELAY_QUEUE = 1
CLOSE_QUEUE = 2


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def forge_fin(packet: bytes) -> tuple[bytes, str] | None:
    """Given a client->server IPv4/TCP packet, forge the server's FIN+ACK to the client."""
    if len(packet) < 40 or packet[0] >> 4 != 4 or packet[9] != socket.IPPROTO_TCP:
        return None
    ihl = (packet[0] & 0x0F) * 4
    total = struct.unpack("!H", packet[2:4])[0]
    src, dst = packet[12:16], packet[16:20]
    tcp = packet[ihl:total]
    sport, dport, seq, ack = struct.unpack("!HHII", tcp[:12])
    doff = (tcp[12] >> 4) * 4
    flags = tcp[13]
    seg_len = len(tcp) - doff + (1 if flags & 0x01 else 0) + (1 if flags & 0x02 else 0)
    # Echo timestamps if the client uses them (TSval := client's TSecr, TSecr := client's TSval).
    options = b""
    i, opts = 0, tcp[20:doff]
    while i < len(opts):
        kind = opts[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        length = opts[i + 1] if i + 1 < len(opts) else 0
        if length < 2:
            break
        if kind == 8 and length == 10:
            tsval, tsecr = struct.unpack("!II", opts[i + 2 : i + 10])
            options = b"\x01\x01\x08\x0a" + struct.pack("!II", tsecr, tsval)
        i += length
    hdr_len = 20 + len(options)
    fin = struct.pack(
        "!HHIIBBHHH",
        dport,
        sport,
        ack,
        (seq + seg_len) & 0xFFFFFFFF,
        (hdr_len // 4) << 4,
        0x11,  # FIN|ACK
        65535,
        0,
        0,
    )
    fin += options
    pseudo = dst + src + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(fin))
    fin = fin[:16] + struct.pack("!H", checksum(pseudo + fin)) + fin[18:]
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(fin), 0, 0x4000, 64, socket.IPPROTO_TCP, 0, dst, src
    )
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return ip + fin, socket.inet_ntoa(src)


def main(argv: list[str]) -> None:
    ready_path = argv[0]
    held: list = []
    order = itertools.count()
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)

    def on_delay(pkt):
        delay = (pkt.get_mark() >> 16) / 1000.0
        if delay <= 0:
            pkt.accept()
            return
        heapq.heappush(held, (time.monotonic() + delay, next(order), pkt))

    def on_close(pkt):
        try:
            forged = forge_fin(pkt.get_payload())
            if forged is not None:
                raw.sendto(forged[0], (forged[1], 0))
        finally:
            pkt.drop()

    delay_q = NetfilterQueue()
    delay_q.bind(DELAY_QUEUE, on_delay, max_len=65536)
    close_q = NetfilterQueue()
    close_q.bind(CLOSE_QUEUE, on_close)
    queues = {delay_q.get_fd(): delay_q, close_q.get_fd(): close_q}
    with open(ready_path + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(ready_path + ".tmp", ready_path)
    while True:
        timeout = max(0.0, held[0][0] - time.monotonic()) if held else None
        readable, _, _ = select.select(list(queues), [], [], timeout)
        for fd in readable:
            queues[fd].run(block=False)
        now = time.monotonic()
        while held and held[0][0] <= now:
            heapq.heappop(held)[2].accept()


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except KeyboardInterrupt:
        pass
