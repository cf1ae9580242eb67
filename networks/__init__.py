"""Networks of the podium bundles: encoders, decoders and whole models, sizes as arguments."""
