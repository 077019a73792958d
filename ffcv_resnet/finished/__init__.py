"""A finished run: its settings (what config.yaml holds), model.pt, evaluation with test-time
augmentation in dataset order, and the checked run folder that explain, compare and predict
work from. Training writes through it; nothing here trains."""
