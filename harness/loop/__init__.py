"""The fine-tuning loop and what it stands on: the device and precision (:mod:`~harness.loop.env`),
honest clocks and memory readings (:mod:`~harness.loop.measure`), token ids
(:mod:`~harness.loop.tokens`), checkpoints and the classifier, the untimed set-up
(:mod:`~harness.loop.prepare`) and the timed loop itself (:mod:`~harness.loop.train`)."""
