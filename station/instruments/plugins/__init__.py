"""One module per driver: its config model (a strict pydantic table under
``[devices.<name>]``) and ``build(name, cfg)``, which makes the driver object.
Driver imports happen inside ``build`` so that loading a config stays cheap.
"""
