"""M2D / M2D-X: the encoder architecture, its upstreams and (later) their pretraining."""
