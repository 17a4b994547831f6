# wlan.py - join the WLAN named in device.json ("wlan": {"ssid": .., "password": ..}).
#
# Boards only; fleet.run() imports it for the boot and drops it again before the agent starts.
import time

import network


def join(w):
    sta = network.WLAN(network.STA_IF)
    sta.active(True)
    if not sta.isconnected():
        sta.connect(w["ssid"], w.get("password", ""))
        for _ in range(200):  # 20 s
            if sta.isconnected():
                break
            time.sleep_ms(100)
    print("fleetlet: wlan", sta.ifconfig()[0] if sta.isconnected() else "not connected")
