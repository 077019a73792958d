"""Your own images through a finished run: find and decode them (images), the model and its
predictions with maps (model), the output folder (run) and its page (page)."""
