"""probe's DNS-over-HTTPS client (probe.net.resolvers.DoHClient) against the lab's DoH server.

Hostile DoH servers (endless, oversized, garbage, dripping answers, a wrong certificate) are
in tests/test_hostile.py (a whole `probe check` run asks them through this client).
"""

from __future__ import annotations

import json

SNIPPET = """
import asyncio, json, ssl, sys
from probe.net import resolvers
from probe.net.connections import Clock

async def main(url, ca, names):
    context = ssl.create_default_context(cafile=ca)
    doh = resolvers.DoHClient(context, connections=2)
    resolver = resolvers.parse_resolver(url)

    async def one(name):
        query = await resolvers.lookup(resolver, name, "A", timeout=5, clock=Clock(),
                                       doh_client=doh)
        return [query.failure, query.addresses]

    first = await asyncio.gather(*(one(name) for name in names))
    kept = sum(len(idle) for idle in doh.http._idle.values())
    # The server closes the kept connections (as servers do after a while): the next lookups
    # find them closed and ask again on new ones.
    for idle in doh.http._idle.values():
        for conn in idle:
            conn.writer.transport.abort()
    await asyncio.sleep(0.1)
    second = await asyncio.gather(*(one(name) for name in names[:2]))
    await doh.aclose()
    print(json.dumps({"first": first, "kept": kept, "second": second}))

asyncio.run(main(*json.loads(sys.argv[1])))
"""


def test_lookups_share_a_few_kept_connections_and_survive_their_closing(lab):
    names = ["24.kg", "kaktus.media", "example.org", "vesti.kg"] * 3
    code = SNIPPET.replace("sys.argv[1]", repr(json.dumps([lab.DOH_URL, lab.ca_file, names])))
    out = json.loads(lab.python(lab.vantage, code, timeout=60))
    expected = [[None, [lab.site(name).ip]] for name in names]
    assert out["first"] == expected
    assert out["kept"] == 2  # twelve lookups at once, over two connections kept alive
    assert out["second"] == expected[:2]
