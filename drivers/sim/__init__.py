"""Device simulators that speak the real wire protocols over ptys or TCP.

They exist so the station, its tests and a demo run end to end without
hardware; drivers talk to them exactly as they would to the real device.
"""
