# fleet.py - the boot sequence behind main.py: config, WLAN (wlan.py), watchdog, then the agent.
#
# Precompiled like the other modules (main.py is compiled from source on the board, and a
# compile costs heap): main.py only imports this and calls run(), which runs for good, so
# what only the boot needs is imported for it and dropped (wlan.py).
import gc
import json
import sys

BOARD = sys.platform != "linux"


def run():
    with open(sys.argv[1] if not BOARD and len(sys.argv) > 1 else "device.json") as f:
        cfg = json.load(f)
    if BOARD and cfg.get("wlan"):
        import wlan  # boot only: dropped again

        wlan.join(cfg["wlan"])
        del sys.modules["wlan"]
        wlan = None  # type: ignore[assignment]
    wdt = None
    if BOARD and cfg.get("watchdog", 30):
        from machine import WDT

        wdt = WDT(timeout=cfg.get("watchdog", 30) * 1000)
    import asyncio

    import agent

    gc.collect()
    # Collect after every heap/16 bytes allocated (4 KB of a 64 KB heap), not only when an
    # allocation fails: garbage then never piles up among live objects, and a small heap
    # stays less fragmented (the firmware loads and drops modules as it goes). "gcThreshold"
    # in device.json sets it in bytes; 0 turns it off.
    thr = cfg.get("gcThreshold", (gc.mem_free() + gc.mem_alloc()) // 16)
    if thr:
        gc.threshold(thr)
    try:
        asyncio.run(agent.Agent(cfg, wdt).run())
    except Exception as e:  # fatal: start over from a clean boot
        sys.print_exception(e)  # type: ignore[attr-defined]
        if BOARD:
            import machine

            machine.reset()
        raise

