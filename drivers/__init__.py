"""Device drivers. Drivers know protocols; ``drivers.serial_link`` knows bytes."""
