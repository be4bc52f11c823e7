"""Herald: durable, replayable, live events."""
