"""The kiosk appliance: the `kiosk` command and, later, the daemon."""
