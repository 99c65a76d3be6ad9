"""klinelake: the shared core (row model, message contract, lake writer, storage backends)."""
