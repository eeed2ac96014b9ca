"""Training the project's own networks (lab code: the engine never imports it)."""
