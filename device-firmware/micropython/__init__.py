# Marker so the firmware ships as package data; the firmware itself runs on MicroPython.
