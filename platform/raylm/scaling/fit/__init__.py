"""Fitting scaling laws to measured runs (Hoffmann et al. 2022, section 3).

- :mod:`~raylm.scaling.fit.approach1`: the envelope of the training curves (section 3.1);
- :mod:`~raylm.scaling.fit.approach2`: IsoFLOP parabolas and N*(C) = k C^a (section 3.2);
- :mod:`~raylm.scaling.fit.approach3`: L(N, D) = E + A/N^alpha + B/D^beta (section 3.3), searched by
  :mod:`~raylm.scaling.fit.vpnls` (variable projection) or the start grid run by
  :mod:`~raylm.scaling.fit.batched_newton` on :mod:`~raylm.scaling.fit.objective`, with
  :mod:`~raylm.scaling.fit.bootstrap` summaries;
- :mod:`~raylm.scaling.fit.frontier`: the compute frontier L*(C) = E + (C0/C)^gamma (Kaplan et al. 2020);
- :mod:`~raylm.scaling.fit.admitted`: the losses the IsoFLOP minima alone admit at a target (the
  profile-likelihood interval of the frontier's prediction);
- :mod:`~raylm.scaling.fit.blocks`: row blocks on a few threads for the batched searches.
"""
