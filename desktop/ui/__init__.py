"""Widgets that render the desktop models and forward the user's intents. Nothing else:
no service shell, no supervisor, no HTTP here; they talk to models and the bridge."""
