"""Fetches one CoAP resource with aiocoap (its own Block2 handling) and writes the body.

usage: aiocoap_fetch.py URL OUT [BLOCK_SZX]
Prints the response code on stdout; exits 0 when the request completed (any code).
"""

import asyncio
import sys

import aiocoap
from aiocoap import optiontypes


async def main() -> int:
    url, out = sys.argv[1], sys.argv[2]
    ctx = await aiocoap.Context.create_client_context()
    try:
        req = aiocoap.Message(code=aiocoap.GET, uri=url)
        if len(sys.argv) > 3:
            # Ask for a block size; aiocoap then follows Block2 to the end by itself.
            req.opt.block2 = optiontypes.BlockOption.BlockwiseTuple(0, False, int(sys.argv[3]))
        resp = await asyncio.wait_for(ctx.request(req).response, 30)
        with open(out, "wb") as f:
            f.write(resp.payload)
        print(resp.code)
    finally:
        await ctx.shutdown()
    return 0


sys.exit(asyncio.run(main()))
