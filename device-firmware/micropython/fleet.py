# fleet.py - the boot sequence behind main.py: config, WLAN, watchdog, then the agent.
#
# Precompiled like the other modules (main.py is compiled from source on the board, and a
# compile costs heap): main.py only imports this and calls run().
import gc
import json
import sys

BOARD = sys.platform != "linux"


def config(path="device.json"):
    with open(path) as f:
        return json.load(f)


def wlan(cfg):
    w = cfg.get("wlan")
    if not BOARD or not w:
        return
    import network
    import time

    sta = network.WLAN(network.STA_IF)
    sta.active(True)
    if not sta.isconnected():
        sta.connect(w["ssid"], w.get("password", ""))
        for _ in range(200):  # 20 s
            if sta.isconnected():
                break
            time.sleep_ms(100)
    print("fleetlet: wlan", sta.ifconfig()[0] if sta.isconnected() else "not connected")


def run():
    cfg = config(sys.argv[1] if not BOARD and len(sys.argv) > 1 else "device.json")
    wlan(cfg)
    wdt = None
    if BOARD and cfg.get("watchdog", 30):
        from machine import WDT

        wdt = WDT(timeout=cfg.get("watchdog", 30) * 1000)
    import asyncio

    import agent

    gc.collect()
    try:
        asyncio.run(agent.Agent(cfg, wdt).run())
    except Exception as e:  # fatal: start over from a clean boot
        sys.print_exception(e)  # type: ignore[attr-defined]
        if BOARD:
            import machine

            machine.reset()
        raise

