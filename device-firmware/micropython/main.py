# main.py - boot entry (fleet.py does the work, precompiled): config, WLAN, watchdog, agent.
#
#   device.json: {"device": name, "host": gateway, "port": 5683, "token": credential,
#                 "reportInterval": 30, "wlan": {"ssid": .., "password": ..}, "data": "data"}
# (`fleetlet device add` writes the first keys.) On the unix port (sys.platform "linux"),
# WLAN, the watchdog and machine.reset() are skipped; the path of device.json may be given
# as the first argument there.
import fleet

fleet.run()
