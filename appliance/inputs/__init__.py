"""Input sources behind one interface: gpiozero, Jetson.GPIO, evdev, keyboard, web."""
