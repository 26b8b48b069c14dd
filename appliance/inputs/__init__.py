"""Input sources behind one interface: gpiozero, Jetson.GPIO, evdev, keyboard, web.

`make_sources(config, router.handle)` starts one source per kind; each
emits `InputEvent`s to the `Router`, which turns them into `Action`s for the
daemon.  The touch screen comes in through `Router.web`, the same path.
"""

from appliance.inputs.base import InputError, InputSource
from appliance.inputs.events import InputEvent
from appliance.inputs.router import Action, Router, make_sources

__all__ = ["Action", "InputError", "InputEvent", "InputSource", "Router", "make_sources"]
